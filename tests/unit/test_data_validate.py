"""Validation: every rule, with a record that breaks it, fails with the right reason code."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llavast.data.validate import tolerate, validate_record


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


def _conv(record: dict[str, Any]) -> list[str]:
    return [t["value"] for t in record["conversations"]]


@pytest.mark.parametrize(("edit", "tolerance", "reason", "check"), [
    (lambda r: r["conversations"].insert(0, {"from": "gpt", "value": "Hello."}), "dropped_leading_gpt", "roles",
     lambda t: _conv(t) == _conv(good_record())),
    (lambda r: r["conversations"][0].update(value="During {<TEMP-INPUT>,<TEMP-INPUT>}, <video> where is it?"),
     "moved_marker", None, lambda t: _conv(t)[0] == "<video>\nDuring {<TEMP-INPUT>,<TEMP-INPUT>},  where is it?"),
    (lambda r: r["variables"]["temporal_output_locations"].append(0.9), "extra_values", "placeholder_count",
     lambda t: t["variables"]["temporal_output_locations"] == [0.2]),
    (lambda r: r["variables"].update(spatial_width_output_locations=[-0.25, 1.5]), "clipped_values", "value_range",
     lambda t: t["variables"]["spatial_width_output_locations"] == [0.0, 1.0]),
])
def test_release_tolerances_repair_and_name_what_they_changed(edit, tolerance, reason, check) -> None:
    """`validation: release` keeps what the authors' release accepts, repaired as the release repairs it, and
    names the repair; `strict` (no repair) quarantines it (a mid-text marker is valid either way, but only
    the repaired record puts the visual block where the release does)."""
    record = broken(edit)
    if reason is None:
        assert validate_record(record) is None
    else:
        assert validate_record(record).reason == reason
    repaired, applied = tolerate(record)
    assert applied == [tolerance] and validate_record(repaired) is None and check(repaired)
    assert record == broken(edit)  # the input is left as it was


def test_tolerances_leave_good_and_hopeless_records_alone() -> None:
    assert tolerate(good_record()) == (good_record(), [])
    nan = broken(lambda r: r["variables"].update(temporal_output_locations=[float("nan")]))
    repaired, applied = tolerate(nan)
    assert applied == [] and validate_record(repaired).reason == "value_range"  # the release cannot use it either
    few = broken(lambda r: r["variables"].update(temporal_input_locations=[0.1]))
    assert tolerate(few)[1] == [] and validate_record(tolerate(few)[0]).reason == "placeholder_count"
    only_gpt = {"video": "v.mp4", "conversations": [{"from": "gpt", "value": "<video>\nx"}]}
    assert tolerate(only_gpt)[1] == []  # nothing would be left to train on
