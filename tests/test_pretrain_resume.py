"""PLIP pre-training killed mid-epoch and resumed reaches the same weights and losses as a run
that was never interrupted (the engine's toy-method version is in test_training_engine.py)."""

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from personvl.data import build_transform, load_dataset
from personvl.models import create_model
from personvl.training.optim import OptimConfig
from personvl.training.pretrain import DataConfig, PretrainData, pretrain
from personvl.training.task import TrainingTask
from personvl.training.trainer import TrainerConfig, build_trainer

# The small world's train split gives 5 batches of 4 x 2 an epoch: the run dies in the second
# epoch one step after the checkpoint at step 7 (two batches into that epoch), and the resumed
# run crosses into the third. The last step is a checkpoint too, so both runs' last.ckpt hold
# the final state of the whole method.
STEPS = 14
CHECKPOINT_EVERY = 7
KILL_AT = 8

# All three PLIP losses on, a tiny encoder, batches of 4 identities x 2 images.
OVERRIDES = [f"trainer.max_steps={STEPS}", f"trainer.checkpoint_every_n_steps={CHECKPOINT_EVERY}",
             "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.log_every_n_steps=1",
             "data.workers=1", "data.identities_per_batch=4", "data.images_per_identity=2",
             "plip.decoder_width=16", "plip.ivlc_weight=1.0", "plip.tic_weight=0.02", "plip.iap_weight=0.1"]
RECIPE = "configs/pretrain/plip_tiny.yaml"

KILLED_RUN = textwrap.dedent('''
    import os, sys
    import lightning.pytorch as pl
    import personvl.training.pretrain as recipe

    recipe_path, stop_after, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

    class Kill(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == stop_after:
                os._exit(9)   # like SIGKILL: no cleanup, no final checkpoint

    build_trainer = recipe.build_trainer

    def build_trainer_that_dies(config, out):
        trainer = build_trainer(config, out)
        trainer.callbacks.append(Kill())   # after ModelCheckpoint: the step's checkpoint is written first
        return trainer

    recipe.build_trainer = build_trainer_that_dies
    recipe.pretrain(recipe_path, overrides, echo=lambda *_: None)
''')


def logged_losses(run: Path) -> dict[int, dict[str, str]]:
    """Step -> the losses logged at it; a step logged again after a resume keeps its last row."""
    with open(run / "logs" / "metrics.csv", newline="") as handle:
        return {int(row["step"]): {k: v for k, v in row.items() if k.startswith("train/")}
                for row in csv.DictReader(handle)}


@pytest.fixture
def one_thread():
    """Every run here on one intra-op thread: float sums then happen in the same order in all
    three runs, and on a busy two-core machine two spinning threads per process cost ten times
    the CPU time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


def test_killed_plip_run_resumes_to_the_same_weights_and_losses(small_world, tmp_path, one_thread):
    world, _ = small_world
    data = [f"data.root={world / 'cuhk-pedes'}"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    # The run that dies starts first and overlaps the uninterrupted one: the two share nothing.
    killed = subprocess.Popen([sys.executable, str(script), RECIPE, str(KILL_AT), *data, *OVERRIDES,
                               f"output_dir={resumed}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=one_thread)
    try:
        pretrain(RECIPE, [*data, *OVERRIDES, f"output_dir={straight}"], echo=lambda *_: None)
        _, stderr = killed.communicate(timeout=300)
    finally:
        if killed.poll() is None:
            killed.kill()
    assert killed.returncode == 9, stderr[-2000:]
    checkpoint = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == CHECKPOINT_EVERY
    assert not (resumed / "model").exists()
    before = logged_losses(resumed)

    summary = pretrain(RECIPE, [*data, *OVERRIDES, f"output_dir={resumed}"], resume=True, echo=lambda *_: None)
    assert summary["steps"] == STEPS and summary["nonfinite_steps"] == 0

    expected, weights = load_file(straight / "model" / "model.safetensors"), load_file(resumed / "model" / "model.safetensors")
    assert expected.keys() == weights.keys()
    different = [key for key in expected if not torch.equal(expected[key], weights[key])]
    assert not different, f"{len(different)} encoder tensors differ after the resume, e.g. {different[:3]}"
    # The heads that are not exported (colorization decoder, attribute predictor) as well.
    expected = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    weights = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert expected["global_step"] == weights["global_step"] == STEPS
    expected, weights = expected["state_dict"], weights["state_dict"]
    assert [k for k in expected if not torch.equal(expected[k], weights[k])] == []

    straight_losses, resumed_losses = logged_losses(straight), logged_losses(resumed)
    after_resume = range(CHECKPOINT_EVERY, STEPS)   # CSV steps count from 0: step k is the (k+1)-th batch
    assert {"train/ivlc", "train/tic", "train/iap"} <= set(straight_losses[STEPS - 1])
    for step in after_resume:
        assert resumed_losses[step] == straight_losses[step], step
    # The same batches before the checkpoint, too: the kill did not change what was logged there.
    for step in range(CHECKPOINT_EVERY):
        assert before[step] == straight_losses[step], step


class BatchRecorder(torch.nn.Module):
    """A method that learns nothing and notes which images and captions each step received."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[list[int], list[str]]] = []

    def forward(self, batch, progress, step=0):
        self.seen.append((batch["index"].tolist(), list(batch["caption"])))
        return {"loss": self.weight ** 2}

    def parameter_groups(self):
        return [{"params": [self.weight]}]


def test_every_epoch_draws_new_batches_and_captions(small_world, tmp_path):
    world, _ = small_world
    records = load_dataset("cuhk-pedes", world / "cuhk-pedes", "train")
    data = PretrainData(DataConfig(identities_per_batch=4, images_per_identity=2, workers=0), records,
                        build_transform("plip", train=True, height=32, width=16), create_model("tiny-plip-rn50").tokenizer,
                        seed=0)
    recorder = BatchRecorder()
    trainer = build_trainer(TrainerConfig(max_steps=10, accelerator="cpu", progress_bar=False), tmp_path)
    trainer.fit(TrainingTask(recorder, OptimConfig(name="sgd"), total_steps=10), datamodule=data)
    first, second = recorder.seen[:5], recorder.seen[5:]   # 5 batches an epoch
    assert [indices for indices, _ in first] != [indices for indices, _ in second]
    captions = [{i: c for indices, texts in epoch for i, c in zip(indices, texts)} for epoch in (first, second)]
    assert any(captions[0][i] != captions[1][i] for i in captions[0].keys() & captions[1].keys())


def test_in_memory_data_gives_the_batches_the_files_give(small_world):
    world, _ = small_world
    records = load_dataset("cuhk-pedes", world / "cuhk-pedes", "train")
    tokenizer = create_model("tiny-plip-rn50").tokenizer
    transform = build_transform("plip", train=True, height=32, width=16)
    loaders = []
    for in_memory in (False, True):
        config = DataConfig(identities_per_batch=4, images_per_identity=2, workers=0, in_memory=in_memory)
        data = PretrainData(config, records, transform, tokenizer, seed=0, image_size=(32, 16), progress=False)
        loaders.append(data.train_dataloader())
    batches = [[batch for _, batch in zip(range(6), loader)] for loader in loaders]   # into the second epoch
    for from_files, in_memory in zip(*batches):
        assert from_files.keys() == in_memory.keys()
        for key, value in from_files.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, in_memory[key]), key
            else:
                assert value == in_memory[key], key
    with pytest.raises(ValueError, match="image_size"):
        PretrainData(DataConfig(in_memory=True), records, transform, tokenizer, seed=0)
