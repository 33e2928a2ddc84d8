"""Validation: every rule, with a record that breaks it, fails with the right reason code."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llavast.data.validate import validate_record


def good_record() -> dict[str, Any]:
    return {
        "id": "r1",
        "video": "videos/v1.mp4",
        "conversations": [
            {"from": "human", "value": "<video>\nDuring {<TEMP-INPUT>,<TEMP-INPUT>}, where is the red box?"},
            {"from": "gpt", "value": "<TEMP-OUTPUT>:[<WIDTH-OUTPUT>,<HEIGHT-OUTPUT>,<WIDTH-OUTPUT>,<HEIGHT-OUTPUT>]"},
        ],
        "variables": {
            "temporal_input_locations": [0.1, 0.5],
            "temporal_output_locations": [0.2],
            "spatial_width_output_locations": [0.1, 0.4],
            "spatial_height_output_locations": [0.2, 0.6],
        },
        "meta": {"split": [3, 40]},
    }


def broken(edit) -> dict[str, Any]:
    record = copy.deepcopy(good_record())
    edit(record)
    return record


def test_good_record_passes() -> None:
    assert validate_record(good_record()) is None
    text_only = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    assert validate_record(text_only) is None


CASES = {
    "not an object": ([1, 2], "not_an_object"),
    "both media": (broken(lambda r: r.update(image="a.png")), "media_path"),
    "absolute path": (broken(lambda r: r.update(video="/etc/passwd")), "media_path"),
    "uri path": (broken(lambda r: r.update(video="s3://other/v.mp4")), "media_path"),
    "dotdot escape": (broken(lambda r: r.update(video="videos/../../v.mp4")), "media_path"),
    "empty path": (broken(lambda r: r.update(video="")), "media_path"),
    "starts with gpt": (broken(lambda r: r["conversations"].reverse()), "roles"),
    "two humans": (broken(lambda r: r["conversations"][1].update({"from": "human"})), "roles"),
    "no answer": (broken(lambda r: r["conversations"].pop()), "roles"),
    "no conversations": (broken(lambda r: r.pop("conversations")), "roles"),
    "missing marker": (broken(lambda r: r["conversations"][0].update(value="where?")), "media_marker"),
    "two markers": (broken(lambda r: r["conversations"][1].update(value="<video> again")), "media_marker"),
    "wrong marker": (broken(lambda r: r["conversations"][0].update(
        value=r["conversations"][0]["value"].replace("<video>", "<image>"))), "media_marker"),
    "marker in text-only": (broken(lambda r: r.pop("video")), "media_marker"),
    "unknown variable": (broken(lambda r: r["variables"].update(foo=[0.1])), "variables"),
    "non-numeric variable": (broken(lambda r: r["variables"].update(temporal_output_locations=["a"])), "variables"),
    "too few values": (broken(lambda r: r["variables"]["temporal_input_locations"].pop()), "placeholder_count"),
    "too many values": (broken(lambda r: r["variables"]["temporal_output_locations"].append(0.3)),
                        "placeholder_count"),
    "value above 1": (broken(lambda r: r["variables"].update(temporal_output_locations=[1.5])), "value_range"),
    "negative value": (broken(lambda r: r["variables"].update(temporal_output_locations=[-0.1])), "value_range"),
    "nan value": (broken(lambda r: r["variables"].update(temporal_output_locations=[float("nan")])), "value_range"),
    "split reversed": (broken(lambda r: r["meta"].update(split=[40, 3])), "split"),
    "split negative": (broken(lambda r: r["meta"].update(split=[-1, 3])), "split"),
    "split malformed": (broken(lambda r: r["meta"].update(split=[1])), "split"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rule_violations(name: str) -> None:
    record, reason = CASES[name]
    issue = validate_record(record)
    assert issue is not None and issue.reason == reason, (name, issue)
    assert issue.detail
