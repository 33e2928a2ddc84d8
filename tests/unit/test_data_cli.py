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


def test_plan_of_a_node_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    """`llavast plan --from nosuch` used to print the graph and exit 0; now it fails naming the nodes."""
    (tmp_path / "synth.yaml").write_text("kind: synth\nname: s\nout: st\n")
    (tmp_path / "pipeline.yaml").write_text("kind: pipeline\nname: p\nnodes:\n  - {name: synth, job: synth.yaml}\n")
    for flag in ("--from", "--only"):
        result = CliRunner().invoke(app, ["plan", str(tmp_path / "pipeline.yaml"), flag, "nosuch", "--offline"])
        assert result.exit_code == 1, result.output
        assert f"{flag} nosuch: no such node (nodes: synth)" in result.output and "Traceback" not in result.output
    ok = CliRunner().invoke(app, ["plan", str(tmp_path / "pipeline.yaml"), "--from", "synth", "--offline"])
    assert ok.exit_code == 0, ok.output
