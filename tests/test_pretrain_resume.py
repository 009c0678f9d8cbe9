"""PLIP pre-training killed from outside at any moment, mid-step or mid-write, and resumed
reaches the same weights, losses and files as a run that was never interrupted (the engine's
toy-method version is in test_training_engine.py)."""

import csv
import os
import queue
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from personvl.data import build_transform, load_dataset
from personvl.errors import PersonvlError
from personvl.models import create_model, load_model
from personvl.training.optim import OptimConfig
from personvl.training.pretrain import DataConfig, PretrainData, load_pretrain_config, pretrain
from personvl.training.task import TrainingTask
from personvl.training.trainer import TrainerConfig, build_trainer, start_run

# The small world's train split gives 5 batches of 4 x 2 an epoch; checkpoints at steps 3, 6, 9
# (mid-epoch all three) and 12, the last step, the two newest kept.
STEPS = 12
CHECKPOINT_EVERY = 3

# All three PLIP losses on, a tiny encoder, batches of 4 identities x 2 images.
OVERRIDES = [f"trainer.max_steps={STEPS}", f"trainer.checkpoint_every_n_steps={CHECKPOINT_EVERY}",
             "trainer.keep_last_checkpoints=2", "trainer.accelerator=cpu", "trainer.progress_bar=false",
             "trainer.log_every_n_steps=1", "data.workers=1", "data.identities_per_batch=4",
             "data.images_per_identity=2", "plip.decoder_width=16", "plip.ivlc_weight=1.0", "plip.tic_weight=0.02",
             "plip.iap_weight=0.1"]
RECIPE = "configs/pretrain/plip_tiny.yaml"

# A pre-training run that says on stdout what it is doing, so that the test can kill it from
# outside at chosen moments. It starts when a line comes on stdin (the test starts every process
# early: importing Lightning takes longer than the runs); it says "step N" after each step (and
# its checkpoint); given a pause step it waits for another line after that step; given a stall it
# writes half of one file, says "writing NAME" and hangs there. It never kills itself.
KILLABLE_RUN = textwrap.dedent(r"""
    import io, os, sys, time
    import lightning.pytorch as pl
    import safetensors.torch
    import torch
    import personvl.models.checkpoints as model_files
    import personvl.training.pretrain as recipe

    recipe_path, resume, stall, pause_after, overrides = sys.argv[1], sys.argv[2] == "--resume", sys.argv[3], \
        int(sys.argv[4]), sys.argv[5:]

    def write_half_and_hang(data, target):
        handle = open(target, "wb") if isinstance(target, (str, os.PathLike)) else target
        handle.write(data[:len(data) // 2])
        handle.flush()
        print("writing", os.path.basename(handle.name), flush=True)
        time.sleep(600)

    save = torch.save

    def save_or_stall(obj, target, *args, **kwargs):
        # --stall NAME@STEP: the checkpoint of step STEP written to a file whose name holds NAME
        name = os.path.basename(str(getattr(target, "name", target)))
        if "@" in stall and isinstance(obj, dict):
            wanted, step = stall.split("@")
            if wanted in name and obj.get("global_step") == int(step):
                data = io.BytesIO()
                save(obj, data, *args, **kwargs)
                write_half_and_hang(data.getvalue(), target)
        return save(obj, target, *args, **kwargs)

    torch.save = save_or_stall
    save_weights = model_files.save_file

    def save_weights_or_stall(tensors, filename, metadata=None):
        # --stall model.safetensors: the export of the trained encoder
        if stall == "model.safetensors":
            write_half_and_hang(safetensors.torch.save(tensors, metadata=metadata), filename)
        return save_weights(tensors, filename, metadata=metadata)

    model_files.save_file = save_weights_or_stall

    class Progress(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            print("step", trainer.global_step, flush=True)
            if trainer.global_step == pause_after:
                sys.stdin.readline()

    build_trainer = recipe.build_trainer

    def build_reporting_trainer(config, out):
        trainer = build_trainer(config, out)
        trainer.callbacks.append(Progress())   # after ModelCheckpoint: the step's checkpoint is written first
        return trainer

    recipe.build_trainer = build_reporting_trainer
    sys.stdin.readline()
    recipe.pretrain(recipe_path, overrides, resume=resume, echo=lambda *_: None)
""")


class KillableRun:
    """``KILLABLE_RUN`` in its own process group, waiting for ``go``, read line by line; ``kill``
    SIGKILLs the whole group (the run and its loader worker), as a scheduler ending a job does."""

    def __init__(self, script: Path, arguments: list[str], env: dict[str, str], log: Path, *, resume=False,
                 stall="-", pause_after=-1):
        self.log = log
        with open(log, "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(script), RECIPE, "--resume" if resume else "--new", stall, str(pause_after),
                 *arguments], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
                start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def go(self) -> None:
        """Starts the run, or lets it go on after its pause."""
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def wait_for(self, expected: str, timeout: float = 240) -> float:
        """Waits for the line ``expected``, or one whose first word it is; returns when it came
        (time.monotonic)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {expected!r} within {timeout} s")
            if line is None:
                self.process.wait()
                pytest.fail(f"the run ended (exit {self.process.returncode}) before {expected!r}:\n"
                            f"{self.log.read_text()[-3000:]}")
            if expected in (line, line.split(" ")[0]):
                return time.monotonic()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def temporary_files(run: Path) -> set[str]:
    return {str(path.relative_to(run)) for path in run.rglob("*.tmp")}


def checkpoint_steps(run: Path) -> dict[str, int]:
    """Each checkpoint file a resume could read -> its step; fails on a half-written one."""
    steps = {}
    for path in sorted((run / "checkpoints").glob("*.ckpt")):
        try:
            steps[path.name] = torch.load(path, weights_only=True)["global_step"]
        except Exception as exc:   # noqa: BLE001 - any way of being unreadable is the failure
            pytest.fail(f"{path.name} is half-written: {exc}")
    return steps


def logged_losses(run: Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of the run's metrics.csv: (step, the losses logged at it)."""
    with open(run / "logs" / "metrics.csv", newline="") as handle:
        return [(int(row["step"]), {k: v for k, v in row.items() if k.startswith("train/")})
                for row in csv.DictReader(handle)]


@pytest.fixture
def one_thread():
    """Every run here on one intra-op thread: float sums then happen in the same order in all
    runs, and on a busy two-core machine two spinning threads per process cost ten times
    the CPU time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


def test_run_killed_from_outside_resumes_to_the_same_weights_losses_and_files(small_world, tmp_path, one_thread):
    world, _ = small_world
    arguments = [f"data.root={world / 'cuhk-pedes'}", *OVERRIDES]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    script = tmp_path / "killable_run.py"
    script.write_text(KILLABLE_RUN)
    moments = random.Random(20)   # where within a stalled write, and after which step, the kills land

    def attempt(name: str, **how) -> KillableRun:
        return KillableRun(script, [*arguments, f"output_dir={resumed}"], one_thread, tmp_path / f"{name}.log", **how)

    first, second, third, fourth = attempts = [
        attempt("first", stall="step0000003.ckpt@3"), attempt("second", resume=True, pause_after=1),
        attempt("third", resume=True, stall="last.ckpt@9"),
        attempt("fourth", resume=True, pause_after=7, stall="model.safetensors")]
    try:
        first.go()
        # The uninterrupted run, meanwhile: it shares nothing with the interrupted one.
        pretrain(RECIPE, [*arguments, f"output_dir={straight}"], echo=lambda *_: None)

        # 1. Killed while writing its first checkpoint: no checkpoint yet, a half temporary file.
        first.wait_for("writing")
        time.sleep(moments.uniform(0, 0.2))
        first.kill()
        assert checkpoint_steps(resumed) == {}
        assert temporary_files(resumed) == {"checkpoints/.step0000003.ckpt.tmp"}

        # 2. --resume with no checkpoint starts again from the first step, the half file gone;
        #    killed at a random moment after a random step past the first checkpoint.
        second.go()
        second.wait_for("step 1")
        assert temporary_files(resumed) == set()
        second.go()
        last_step = moments.randint(CHECKPOINT_EVERY + 1, 2 * CHECKPOINT_EVERY)
        previous = second.wait_for(f"step {last_step - 1}")
        step_time = second.wait_for(f"step {last_step}") - previous
        time.sleep(moments.uniform(0, step_time))   # somewhere in the next step: data, forward, backward, a write
        second.kill()
        assert checkpoint_steps(resumed)["last.ckpt"] in (CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY)

        # 3. Killed between writing step0000009.ckpt and last.ckpt, halfway through last.ckpt.
        third.go()
        third.wait_for("writing")
        assert temporary_files(resumed) == {"checkpoints/.last.ckpt.tmp"}   # whatever attempt 2 left is gone
        time.sleep(moments.uniform(0, 0.2))
        third.kill()
        assert checkpoint_steps(resumed) == {"last.ckpt": 6, "step0000006.ckpt": 6, "step0000009.ckpt": 9}

        # 4. Resumed from last.ckpt (step 6, not the newer step0000009.ckpt), then killed while
        #    exporting the trained encoder: the model folder is not one that load_model accepts.
        fourth.go()
        fourth.wait_for("step 7")
        assert temporary_files(resumed) == set()
        fourth.go()
        fourth.wait_for("writing")
        time.sleep(moments.uniform(0, 0.2))
        fourth.kill()
    finally:
        for run in attempts:
            run.kill()
    assert checkpoint_steps(resumed) == {"last.ckpt": STEPS, "step0000009.ckpt": 9, "step0000012.ckpt": STEPS}
    assert temporary_files(resumed) == {"model/model.safetensors.tmp"}
    with pytest.raises(PersonvlError, match="not a personvl model folder"):
        load_model(resumed / "model")
    assert not (resumed / "summary.json").exists()

    # 5. The last resume has no step left to train: it exports the encoder and writes the summary.
    summary = pretrain(RECIPE, [*arguments, f"output_dir={resumed}"], resume=True, echo=lambda *_: None)
    assert summary["steps"] == STEPS and summary["nonfinite_steps"] == 0
    assert temporary_files(resumed) == set()
    assert checkpoint_steps(resumed) == checkpoint_steps(straight)
    assert sorted(os.listdir(resumed / "model")) == sorted(os.listdir(straight / "model"))
    load_model(resumed / "model")

    expected, weights = load_file(straight / "model" / "model.safetensors"), load_file(resumed / "model" / "model.safetensors")
    assert expected.keys() == weights.keys()
    different = [key for key in expected if not torch.equal(expected[key], weights[key])]
    assert not different, f"{len(different)} encoder tensors differ after the resume, e.g. {different[:3]}"
    # The heads that are not exported (colorization decoder, attribute predictor) as well.
    expected = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    weights = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert [k for k in expected if not torch.equal(expected[k], weights[k])] == []

    # The losses of every step, those before the kills kept and those trained again after a resume
    # logged once, as the uninterrupted run logged them.
    losses = logged_losses(straight)
    assert [step for step, _ in losses] == list(range(STEPS))   # CSV steps count from 0
    assert {"train/ivlc", "train/tic", "train/iap"} <= set(losses[-1][1])
    assert logged_losses(resumed) == losses


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_the_start_without_its_partial_files(tmp_path):
    out = tmp_path / "run"
    config = load_pretrain_config(RECIPE, [f"output_dir={out}"])
    with pytest.raises(PersonvlError, match="nothing to resume"):
        start_run(config, resume=True)
    start_run(config, resume=False)
    partial = ["checkpoints/.step0000100.ckpt.tmp", "checkpoints/.last.ckpt.tmp", "checkpoints/.best.pt.tmp",
               "model/model.safetensors.tmp", "model/config.json.tmp", "logs/.metrics.csv.tmp", ".summary.json.tmp"]
    others = ["checkpoints/notes.tmp", "model/notes.tmp", "notes.tmp", ".notes.tmp", "logs/metrics.csv",
              "model/tokenizer/.vocab.txt.tmp"]
    for name in partial + others:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"half")
    with pytest.warns(UserWarning, match="starts again from its first step"):
        assert start_run(config, resume=True) == (out, None)
    assert [name for name in partial if (out / name).exists()] == []
    assert [name for name in others if not (out / name).exists()] == []
    (out / "checkpoints/.last.ckpt.tmp").write_bytes(b"half")
    assert start_run(config, resume=False) == (out, None)   # a new start there cleans up too
    assert not (out / "checkpoints/.last.ckpt.tmp").exists()
    (out / "summary.json").write_text("{}")
    with pytest.raises(PersonvlError, match="nothing to resume"):
        start_run(config, resume=True)


def test_a_resumed_run_continues_its_metrics_log(tmp_path):
    from personvl.training.checkpointing import ContinuedMetricsWriter

    logs = tmp_path / "logs"
    first = ContinuedMetricsWriter(str(logs))
    for step in range(5):   # the run stopped after step 4, its last checkpoint at step 3
        first.log_metrics({"train/loss": float(step), **({"train/warmup": 1.0} if step < 2 else {})}, step)
    first.save()
    resumed = ContinuedMetricsWriter(str(logs))
    assert (logs / "metrics.csv").is_file()
    for step in (3, 4, 5):
        resumed.log_metrics({"train/loss": step + 0.5, "train/new": 2.0}, step)
        resumed.save()
    with open(logs / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["step"], row["train/loss"]) for row in rows] == [
        ("0", "0.0"), ("1", "1.0"), ("2", "2.0"), ("3", "3.5"), ("4", "4.5"), ("5", "5.5")]
    assert [row["train/warmup"] for row in rows] == ["1.0", "1.0", "", "", "", ""]
    assert [row["train/new"] for row in rows] == ["", "", "", "2.0", "2.0", "2.0"]
    assert list(logs.iterdir()) == [logs / "metrics.csv"]


class Killed(BaseException):
    """Stands for SIGKILL: no handler runs and nothing is cleaned up."""


def test_an_export_killed_over_an_older_model_leaves_no_model_to_load(tmp_path, monkeypatch):
    from personvl.models import save_model

    folder = tmp_path / "model"
    save_model(create_model("tiny-plip-rn50"), folder)
    newer = create_model("tiny-plip-rn50")

    def killed_while_writing(self, directory):
        raise Killed

    # The new weights are in place, the tokenizer is being written when the process dies.
    monkeypatch.setattr(type(newer.tokenizer), "save", killed_while_writing)
    with pytest.raises(Killed):
        save_model(newer, folder)
    with pytest.raises(PersonvlError, match="not a personvl model folder"):
        load_model(folder)


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
