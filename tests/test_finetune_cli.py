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


# Each task's tiny recipe, shortened; the re-ID one with BoT's BNNeck feature so that its head
# travels in the folder, the search one with a detector trained for a few steps.
ROUND_TRIP = [
    ("t2i", "cuhk-pedes", ["trainer.max_steps=4", "data.identities_per_batch=4"], ["R1", "R5", "mAP", "mINP"]),
    ("reid", "market1501", ["trainer.max_steps=4", "evaluation.feature=bnneck"], ["R1", "mAP", "mINP"]),
    ("attributes", "pa100k", ["trainer.max_steps=4", "selection.every_n_steps=2"], ["mA", "accuracy", "F1"]),
    ("parsing", "lip", ["trainer.max_steps=4", "selection.every_n_steps=2", "head.width=16"],
     ["mIoU", "pixel_accuracy"]),
    ("search", "prw", ["trainer.max_steps=2", "detector.max_steps=2", "evaluation.det_thresh=0.0"],
     ["mAP", "top1", "detection_AP", "detection_recall"]),
]


@pytest.mark.parametrize("task, folder, overrides, keys", ROUND_TRIP, ids=[t[0] for t in ROUND_TRIP])
def test_eval_of_a_finetuned_folder_gives_the_runs_own_figures(small_world, tmp_path, task, folder, overrides,
                                                               keys, capsys):
    world, _ = small_world
    root = world / folder
    out = tmp_path / "run"
    assert _run(["finetune", task, f"configs/finetune/{task}_tiny.yaml", f"data.root={root}", f"output_dir={out}",
                 "trainer.progress_bar=false", "evaluation.plots=false", *overrides]) == 0
    trained = json.loads((out / "metrics.json").read_text())["metrics"]
    extra = ["--det-thresh", "0"] if task == "search" else []
    assert _run(["eval", task, str(out / "model"), folder, str(root), "--out", str(tmp_path / "again"), *extra]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())["metrics"]
    for key in keys:
        assert again[key] == pytest.approx(trained[key], abs=1e-6), key
    heads = {"t2i": [], "reid": ["reid"], "attributes": ["attributes"], "parsing": ["parsing"], "search": ["search"]}
    from personvl.tasks.heads import saved_heads

    assert saved_heads(out / "model") == heads[task]
    from personvl.models import load_model

    assert load_model(out / "model").load_report.heads == heads[task]   # the folder's load report names them
