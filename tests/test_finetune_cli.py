"""``personvl finetune`` and ``personvl eval`` through their argparse registration."""

import argparse
import json

import pytest

from personvl.commands import finetune as commands


# One intra-op thread: two threads on two shared cores spend more time waiting than computing.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(argv):
    parser = argparse.ArgumentParser(prog="personvl")
    commands.register(parser.add_subparsers(dest="command"))
    args, leftover = parser.parse_known_args(argv)
    if leftover:
        args.overrides = list(args.overrides) + leftover
    return args.handler(args)


def test_eval_zero_shot_reid_with_rerank_writes_a_report(small_world, tmp_path, capsys):
    world, _ = small_world
    out = tmp_path / "eval"
    assert _run(["eval", "reid", "tiny-plip-rn50", "market1501", str(world / "market1501"), "--rerank",
                 "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["task"] == "reid" and report["metrics"]["rerank"] is True
    assert report["metrics"]["queries"] == 12 and (out / "cmc.png").exists()


def test_eval_rerank_is_refused_outside_reid(small_world):
    from personvl.errors import UsageError

    world, _ = small_world
    with pytest.raises(UsageError, match="reid"):
        _run(["eval", "t2i", "tiny-plip-rn50", "cuhk-pedes", str(world / "cuhk-pedes"), "--rerank"])


def test_finetune_then_eval_finds_the_attribute_head(small_world, tmp_path, capsys):
    world, _ = small_world
    root = world / "pa100k"
    out = tmp_path / "run"
    assert _run(["finetune", "attributes", "configs/finetune/attributes_tiny.yaml", f"data.root={root}",
                 f"output_dir={out}", "mode=linear_probe", "probe.steps=40", "trainer.progress_bar=false"]) == 0
    assert "mA" in capsys.readouterr().out
    trained = json.loads((out / "metrics.json").read_text())["metrics"]
    assert _run(["eval", "attributes", str(out / "model"), "pa100k", str(root), "--out", str(tmp_path / "e")]) == 0
    again = json.loads((tmp_path / "e" / "metrics.json").read_text())["metrics"]
    assert again["head"] == "trained head" and again["mA"] == pytest.approx(trained["mA"], abs=1e-4)


def test_eval_t2i_zero_shot_prints_the_table(small_world, capsys):
    world, _ = small_world
    assert _run(["eval", "t2i", "tiny-plip-rn50", "cuhk-pedes", str(world / "cuhk-pedes"), "--split", "val"]) == 0
    assert "R1" in capsys.readouterr().out
