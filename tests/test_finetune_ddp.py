"""Fine-tuning under DDP: every task's batches are split by the rank the trainer gives them, so
two processes train on disjoint batches whose union is what one process would draw."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from personvl.tasks.registry import TASKS
from personvl.tasks.runner import get_task, load_task_config, open_encoder, selection_data

SCRIPT = textwrap.dedent('''
    import json, sys
    import personvl.tasks.runner as runner
    from personvl.tasks.registry import finetune_task

    task, config, out, overrides = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    drawn = []
    original = runner.StageData.train_dataloader

    def recording(self):
        loader = original(self)
        batches = loader.batch_sampler.batch_sampler

        class Recorded:
            def __iter__(self):
                for batch in batches:
                    drawn.append([loader.batch_sampler.epoch, list(batch)])
                    yield batch
            def __len__(self):
                return len(batches)
            def set_epoch(self, epoch):
                batches.set_epoch(epoch) if hasattr(batches, "set_epoch") else batches.sampler.set_epoch(epoch)

        loader.batch_sampler.batch_sampler = Recorded()
        return loader

    runner.StageData.train_dataloader = recording
    summary = finetune_task(task, config, [f"output_dir={out}", "trainer.devices=2", "trainer.strategy=ddp",
                                           "trainer.accelerator=cpu", "trainer.progress_bar=false", "data.workers=0",
                                           *overrides])
    from lightning.pytorch.utilities import rank_zero_only
    with open(f"{out}/rank{rank_zero_only.rank}.json", "w") as handle:
        json.dump({"drawn": drawn, "summary": summary}, handle)
''')


def _single_process_draw(task_name, config_path, overrides, epochs):
    """Batches one process draws for the run's first stage, epoch by epoch."""
    task = get_task(task_name)
    config = load_task_config(task, config_path, overrides)
    train = task.read_records(config.data, config.data.train_split, relabel=task.identities)
    train, _, _ = selection_data(task, config, train)
    stage = task.stages(config, open_encoder(config.model), train, lambda *a: None)[0]
    draws = []
    for epoch in epochs:
        batches = stage.batches(0, 1)
        (batches if hasattr(batches, "set_epoch") else batches.sampler).set_epoch(epoch)
        draws.append([list(map(int, b)) for b in batches])
    return draws


@pytest.mark.parametrize("task, folder, overrides", [
    ("reid", "market1501", ["trainer.max_steps=6", "data.identities_per_batch=4", "data.images_per_identity=2",
                            "evaluation.plots=false"]),
    ("parsing", "lip", ["trainer.max_steps=6", "data.batch_size=4", "selection.every_n_steps=3",
                        "head.width=16", "evaluation.plot_images=0"]),
])
def test_two_ranks_train_on_disjoint_halves_of_one_draw(small_world, tmp_path, task, folder, overrides):
    world, _ = small_world
    config = f"configs/finetune/{task}_tiny.yaml"
    overrides = [f"data.root={world / folder}", "trainer.checkpoint_every_n_steps=3", *overrides]
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, str(script), task, config, str(out), *overrides], capture_output=True,
                            text=True, timeout=600, cwd=".")
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    steps = 6
    trained = [rank["drawn"][:steps] for rank in ranks]
    assert all(len(batches) == steps for batches in trained)
    # Rank r's batches are batches r, r + 2, ... of the single-process draw of each epoch.
    epochs = sorted({epoch for batches in trained for epoch, _ in batches})
    draws = _single_process_draw(task, config, overrides, epochs)
    for rank, batches in enumerate(trained):
        expected = [[epoch, batch] for epoch, draw in zip(epochs, draws) for batch in draw[rank::2][:len(draw) // 2]]
        assert batches == expected[:steps]
    for (_, a), (_, b) in zip(*trained):
        assert set(a).isdisjoint(b)
    # Only the first rank writes the model and the figures; the selection ran on both alike.
    assert ranks[0]["summary"]["steps"] == steps and (out / "model" / "config.json").exists()
    assert "metrics" not in ranks[1]["summary"]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_splits_its_batches_by_rank(small_world, task):
    """Every stage of every task, asked for rank r of 2, gives the r-th of each pair of the
    single-process batches: disjoint across ranks, together the whole draw."""
    world, _ = small_world
    folder = {"t2i": "cuhk-pedes", "reid": "market1501", "attributes": "pa100k", "parsing": "lip", "search": "prw"}[task]
    overrides = [f"data.root={world / folder}", "data.batch_size=4", "data.identities_per_batch=2",
                 "data.images_per_identity=2", *(["detector.batch_size=1"] if task == "search" else [])]
    config = load_task_config(task, f"configs/finetune/{task}_tiny.yaml", overrides)
    definition = get_task(task)
    train = definition.read_records(config.data, config.data.train_split, relabel=definition.identities)
    torch.manual_seed(0)
    stages = definition.stages(config, open_encoder(config.model), train, lambda *a: None)
    assert stages
    for stage in stages:
        for epoch in (0, 3):
            def draw(rank, world_size):
                batches = stage.batches(rank, world_size)
                (batches if hasattr(batches, "set_epoch") else batches.sampler).set_epoch(epoch)
                return [list(map(int, b)) for b in batches]

            whole, first, second = draw(0, 1), draw(0, 2), draw(1, 2)
            assert len(first) == len(second) == len(whole) // 2 > 0
            assert first == whole[0::2][:len(first)] and second == whole[1::2][:len(second)]
            assert not {i for b in first for i in b} & {i for b in second for i in b}
