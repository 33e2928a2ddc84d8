"""`llavast data synth` through the real CLI entry point; user errors print one line and exit 1."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from llavast.cli import app


def test_synth_writes_dataset(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "st"), "--videos", "2",
                                      "--images", "1", "--benchmark-videos", "1"])
    assert result.exit_code == 0, result.output
    assert "24 samples" in result.output
    assert (tmp_path / "st" / "mixtures" / "stage3.yaml").exists()
    assert len(list((tmp_path / "st" / "videos").glob("*.mp4"))) == 2


def test_user_error_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "synth", "--out", "gs://bucket/x", "--videos", "1"])
    assert result.exit_code == 1
    assert "unsupported URI scheme 'gs'" in result.output and "Traceback" not in result.output


def test_index_options_out_of_range_are_refused_before_ray(tmp_path: Path) -> None:
    """`--rows-per-shard 0` and an unknown `--validation` are usage errors naming the option (before, a
    traceback after Ray started, and a partial manifest)."""
    for args, option in ((["--rows-per-shard", "0"], "--rows-per-shard"), (["--validation", "lenient"],
                                                                          "--validation")):
        result = CliRunner().invoke(app, ["data", "index", str(tmp_path / "mixture.yaml"), "--out",
                                          str(tmp_path / "index"), *args])
        assert result.exit_code == 2 and option in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "index").exists()
