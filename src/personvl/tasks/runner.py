"""One driver for every downstream task: ``run(task, config)`` fine-tunes, selects, saves and
evaluates; ``evaluate_saved(task, model_dir, dataset, root)`` scores a saved model the same way.

A task (:class:`Task`) supplies only what is its own: its config type, how it builds its
training stages from the training records, how it scores an encoder and its head on a split,
its primary metric and how its head is saved. The driver owns the rest, identically for all:

- the run folder: a finished run is never overwritten, a killed one resumes with ``resume``;
- seeding, and the split policy: the model is selected on ``data.val_split`` (``auto``: the
  dataset's ``val`` split where it has one and it is not the protocol's test split), or on a
  held-out ``data.holdout_fraction`` of the training records, or the last step is kept. A
  selection (or training) split that is the one the test figures come from is refused;
- training on Lightning, one stage after another, with the selection callback on the stage
  marked ``selected``; every stage's batches are drawn in ``train_dataloader``, where the
  trainer knows this process's rank, so DDP ranks get disjoint batches;
- saving the encoder and the task's head into ``model/`` (see :mod:`personvl.tasks.heads`);
- the final evaluation, which reads the test split once, after the weights are fixed, and
  ``metrics.json`` / ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import Dataset

from personvl.errors import PersonvlError, UsageError
from personvl.training.checkpointing import write_text_atomically
from personvl.training.optim import OptimConfig
from personvl.training.pretrain import ModelSpec
from personvl.training.trainer import CHECKPOINT_DIR, LAST_CHECKPOINT, TrainerConfig

MODEL_DIR = "model"
SUMMARY_FILE = "summary.json"
SELECTION_FILE = "selection.json"
BEST_WEIGHTS = "best.pt"
NO_SPLIT = (None, "", "none", "null")


# ---------------------------------------------------------------------------------------------
# The config sections every task shares


@dataclass
class TaskData:
    dataset: str = ""
    root: str = ""
    train_split: str = "train"
    # "auto": the dataset's "val" split when it has one (and it is not the test split); a split
    # name; or none: a held-out fraction of train (holdout_fraction), else the last step is kept.
    val_split: str | None = "auto"
    holdout_fraction: float = 0.0
    identities_per_batch: int = 8      # P (tasks whose records have identities)
    images_per_identity: int = 4       # K
    batch_size: int = 32               # tasks without identities
    workers: int = 2
    transform: str = "reid"            # augmentation recipe; size and normalisation follow the model
    skip_missing: bool = False
    options: dict[str, Any] = field(default_factory=dict)   # the format's own (variant=..., protocol=...)

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise UsageError(f"data.holdout_fraction must be in [0, 1), got {self.holdout_fraction}")


@dataclass
class SelectionConfig:
    every_n_steps: int = 0             # 0: only at the end of training
    metric: str = ""                   # empty: the task's own (R1, mAP, mA, mIoU)


@dataclass
class EvaluationTarget:
    """Where the final evaluation runs: by default the training dataset's test split; naming
    another dataset measures domain generalisation (trained on A, tested on B)."""

    dataset: str | None = None
    root: str | None = None
    split: str = "test"
    batch_size: int = 64
    plots: bool = True
    options: dict[str, Any] = field(default_factory=dict)   # the evaluation dataset format's own


@dataclass
class ProbeConfig:
    """Linear probing: the encoder stays frozen, its embeddings of each split are computed once
    and only a small head learns (seconds even on CPU)."""

    steps: int = 300
    lr: float = 0.01
    weight_decay: float = 1e-4
    batch_size: int = 256


# How a task with a probe trains: the whole encoder, or a head on its frozen embeddings.
MODES = ("finetune", "linear_probe")


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


@dataclass
class TaskConfig:
    """The layout every task's config shares: ``output_dir``, ``data``, ``model``, ``optim``,
    ``trainer``, ``selection``, ``evaluation``, then the task's own sections. A task's config
    type is made by :func:`task_config`, which sets the sections' types and defaults."""

    output_dir: str = "runs/finetune"
    data: TaskData = field(default_factory=TaskData)
    model: ModelSpec = field(default_factory=ModelSpec)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    evaluation: EvaluationTarget = field(default_factory=EvaluationTarget)


@dataclass
class ProbedTaskConfig(TaskConfig):
    """A task that can also learn its head alone on frozen embeddings (``mode: linear_probe``)."""

    mode: str = "finetune"             # finetune | linear_probe
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self) -> None:
        check_mode(self.mode)


def task_config(name: str, module: str, *, probed: bool = False, **sections: Any) -> type:
    """A task's config type: the shared layout of :class:`TaskConfig` (or
    :class:`ProbedTaskConfig`) with, for each keyword, a section's default. A shared section
    takes a factory of its own type or of a subtype (``data=ReidData``,
    ``optim=strong_baseline_optim``, ``output_dir="runs/reid"``); any other keyword adds the
    task's own section (``loss=ReidLosses``), typed by its class."""
    base = ProbedTaskConfig if probed else TaskConfig
    shared = {f.name: f.type for f in dataclasses.fields(base)}
    hints = typing.get_type_hints(base)
    fields = []
    for key, default in sections.items():
        if key == "output_dir":
            fields.append((key, str, field(default=default)))
        elif key in shared:
            kind = default if isinstance(default, type) and issubclass(default, hints[key]) else hints[key]
            fields.append((key, kind, field(default_factory=default)))
        elif isinstance(default, type):
            fields.append((key, default, field(default_factory=default)))
        else:
            raise TypeError(f"task_config {name}: section {key!r} needs a class as its default")
    config = dataclasses.make_dataclass(name, fields, bases=(base,))
    config.__module__ = module
    return config


# The text-to-image and re-ID figures every ranking reports.
RANKING_METRICS = ("R1", "R5", "R10", "mAP", "mINP")

# ---------------------------------------------------------------------------------------------
# What a task supplies


@dataclass
class Stage:
    """One Lightning training of a run: ``method(batch, progress, step)`` returns named losses
    (``"loss"`` the total) and ``method.parameter_groups()`` its optimiser groups;
    ``batches(rank, world_size)`` the batch sampler of one rank."""

    name: str                                        # "" for the run folder itself, else a sub-folder
    method: nn.Module
    dataset: Dataset
    batches: Callable[[int, int], Any]
    optim: OptimConfig
    max_steps: int
    collate: Callable | None = None
    selected: bool = True                            # scored on the selection split while it trains
    describe: str = ""


@dataclass
class Trained:
    """What the final evaluation scores: the encoder and the task's head (or None)."""

    encoder: Any
    head: nn.Module | None = None


class Task(ABC):
    """A downstream task as the driver sees it. Subclasses set the class attributes and
    implement the abstract methods; the rest has defaults that fit most tasks."""

    name: str = ""
    config_type: type = object
    metric: str = ""                        # the primary metric (selection's default)
    reported: tuple[str, ...] = ()          # metrics copied into summary.json
    identities: bool = False                # training records need identities (relabelled 0..n-1)
    stage_folders: tuple[str, ...] = ()     # sub-folders of extra training stages

    # -- splits ------------------------------------------------------------------------------

    def protocol_split(self, dataset: str, split: str) -> str:
        """The split actually read for ``split`` (a protocol may report on a split named otherwise)."""
        return split

    def test_splits(self, dataset: str, root: str, options: dict[str, Any]) -> set[str]:
        """The splits the test figures of ``dataset`` are computed on."""
        return {self.protocol_split(dataset, "test")}

    # -- data --------------------------------------------------------------------------------

    def read_records(self, data: TaskData, split: str, *, relabel: bool = False):
        import personvl.data as data_module

        records = data_module.load_dataset(data.dataset, data.root, self.protocol_split(data.dataset, split),
                                           skip_missing=data.skip_missing, relabel=relabel, **data.options)
        if not records:
            raise PersonvlError(f"{data.dataset} at {data.root} has no {split} records")
        return records

    def holdout(self, records, fraction: float, seed: int) -> tuple[list, list]:
        """(kept for training, held out for selection): whole identities where records have
        them (so held-out people are unseen), else images."""
        rng = np.random.default_rng(seed)
        if self.identities:
            people = sorted({r.pid for r in records})
            held = set(rng.permutation(people)[:max(1, round(len(people) * fraction))].tolist())
            return [r for r in records if r.pid not in held], [r for r in records if r.pid in held]
        order = rng.permutation(len(records))
        held = set(order[:max(1, round(len(records) * fraction))].tolist())
        return ([r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held])

    def inputs(self, records) -> Any:
        """What :meth:`score` reads, from records (a validation split or held-out records)."""
        return records

    def read_inputs(self, dataset: str, root: str, split: str, options: dict[str, Any], skip_missing: bool = False):
        """What :meth:`score` reads for ``split`` of a dataset on disk."""
        import personvl.data as data_module

        return self.inputs(data_module.load_dataset(dataset, root, self.protocol_split(dataset, split),
                                                    skip_missing=skip_missing, **options))

    # -- training ----------------------------------------------------------------------------

    @abstractmethod
    def stages(self, config: Any, encoder, train, echo) -> list[Stage]:
        """The training stages, in order; the one marked ``selected`` trains the encoder."""

    def trained(self, encoder, stages: list[Stage]) -> Trained:
        """The encoder and head the stages trained."""
        return Trained(encoder, getattr(stages[-1].method, "head", None) if stages else None)

    def probe(self, config: Any, encoder, train, val_inputs, val_name: str | None) -> tuple[Trained, dict, int]:
        raise UsageError(f"{self.name} has no linear probe mode")

    # -- evaluation --------------------------------------------------------------------------

    @abstractmethod
    def score(self, model: Trained, inputs, settings: Any, plots_dir: Path | None = None) -> dict[str, Any]:
        """The task's metrics of ``model`` on ``inputs``; ``settings``: the config's evaluation
        section (thresholds, batch size)."""

    # -- the head in a model folder ----------------------------------------------------------

    def head_settings(self, head: nn.Module) -> dict[str, Any]:
        raise NotImplementedError

    def build_head(self, settings: dict[str, Any], encoder) -> nn.Module:
        raise NotImplementedError

    def load(self, model_dir: str | os.PathLike, encoder=None) -> Trained:
        """The encoder of a saved folder and this task's head from it (None where it has none)."""
        from personvl.models import load_model
        from personvl.tasks.heads import head_files, load_state_exactly, read_head

        encoder = encoder if encoder is not None else load_model(model_dir)
        found = read_head(model_dir, self.name)
        if found is None:
            return Trained(encoder)
        settings, weights = found
        head = load_state_exactly(self.build_head(settings, encoder), weights, str(head_files(model_dir, self.name)[0]))
        return Trained(encoder, head.eval())


def get_task(task: "str | Task") -> Task:
    from personvl.tasks.registry import task_module

    return task if isinstance(task, Task) else task_module(task).TASK


def load_task_config(task: "str | Task", path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> Any:
    """``task``'s config from a YAML recipe (None: the defaults) with dotted overrides."""
    from personvl.config import load_config

    return load_config(get_task(task).config_type, path, overrides)


# ---------------------------------------------------------------------------------------------
# Model selection


class SelectionHistory:
    """Validation scores by step and the best one; the best weights kept in memory and, on
    the first rank, in ``path`` (so a resumed run remembers them)."""

    def __init__(self, metric: str, path: Path, split: str | None):
        self.metric, self.path, self.split = metric, path, split
        self.history: list[dict[str, Any]] = []
        self.best: float | None = None
        self.best_step: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None

    def record(self, step: int, metrics: dict[str, Any], module: nn.Module, write: bool = True) -> None:
        if self.metric not in metrics:
            raise UsageError(f"selection.metric: the validation gives {', '.join(sorted(metrics))}, not {self.metric!r}")
        score = float(metrics[self.metric])
        self.history.append({"step": step, **{k: float(v) for k, v in metrics.items() if _is_number(v)}})
        if self.best is None or score > self.best:
            self.best, self.best_step = score, step
            self._best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            if write:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_name(f".{self.path.name}.tmp")
                torch.save(self._best_state, tmp)
                os.replace(tmp, self.path)

    def restore_best(self, module: nn.Module) -> None:
        if self.best_step is None:
            return
        state = self._best_state
        if state is None:
            if not self.path.exists():
                raise PersonvlError(f"the best weights of step {self.best_step} are gone ({self.path})")
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        module.load_state_dict(state)

    def state(self) -> dict[str, Any]:
        return {"metric": self.metric, "split": self.split, "best": self.best, "best_step": self.best_step,
                "history": self.history}

    def load(self, state: dict[str, Any]) -> None:
        self.best, self.best_step = state.get("best"), state.get("best_step")
        self.history = list(state.get("history", []))
        self._best_state = None

    def summary(self, last_step: int) -> dict[str, Any]:
        if self.split is None:
            return no_selection(last_step)
        return {"split": self.split, "metric": self.metric, "best": self.best, "kept_step": self.best_step,
                "history": self.history}


def no_selection(last_step: int) -> dict[str, Any]:
    return {"split": None, "rule": "no validation split: the last step is kept", "kept_step": last_step}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


class SelectOnValidation(Callback):
    """Scores the model every ``every_n_steps`` steps and when training ends; keeps the best
    weights of ``module``. Every rank scores (so all keep the same weights); the first writes."""

    def __init__(self, score: Callable[[], dict[str, Any]], module: nn.Module, history: SelectionHistory,
                 every_n_steps: int):
        self.score, self.module, self.history = score, module, history
        self.every_n_steps = every_n_steps
        self.last_step = -1

    @property
    def state_key(self) -> str:
        return "SelectOnValidation"

    def _score(self, trainer: pl.Trainer) -> None:
        step = trainer.global_step
        # A resumed run that had already scored this step (it ends at once) does not score it twice.
        if step == self.last_step or step == 0 or any(entry["step"] == step for entry in self.history.history):
            return
        self.last_step = step
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                metrics = self.score()
        finally:
            self.module.train(was_training)
        self.history.record(step, metrics, self.module, write=trainer.is_global_zero)
        # Straight to the loggers: Lightning refuses self.log() in on_train_end, where the
        # last score of a run whose length is not a multiple of every_n_steps is taken.
        for logger in trainer.loggers:
            logger.log_metrics({f"val/{self.history.metric}": float(metrics[self.history.metric])}, step=step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._score(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._score(trainer)

    def state_dict(self) -> dict[str, Any]:
        return self.history.state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history.load(state_dict)


# ---------------------------------------------------------------------------------------------
# Training


class StageData(pl.LightningDataModule):
    """A stage's training loader, built when the trainer knows this process's rank."""

    def __init__(self, stage: Stage, workers: int):
        super().__init__()
        self.stage, self.workers = stage, workers

    def train_dataloader(self):
        from personvl.data.datasets import collate_samples
        from personvl.training.resumable import ResumableDataLoader

        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return ResumableDataLoader(self.stage.dataset, self.stage.batches(rank, world_size), num_workers=self.workers,
                                   collate_fn=self.stage.collate or collate_samples, persistent_workers=self.workers > 0)


def freeze_parameters_without_gradient(stage: Stage) -> list[str]:
    """Freeze the trainable parameters the stage's loss never reaches (a tower's pooling head
    under a segmentation head, say), found by one forward and backward pass on the first
    batch; returns their names. DDP refuses such parameters, and no optimiser would move them.
    The pass leaves the weights, buffers (batch-norm statistics) and random state as they were."""
    from personvl.data.datasets import collate_samples

    method = stage.method
    trainable = [(name, p) for name, p in method.named_parameters() if p.requires_grad]
    if not trainable:
        return []
    buffers = {name: value.detach().clone() for name, value in method.named_buffers()}
    python_state, numpy_state = random.getstate(), np.random.get_state()
    # Augmentations and dropout draw from the global generators: the pass must not move them.
    with torch.random.fork_rng():
        first = next(iter(stage.batches(0, 1)))
        batch = (stage.collate or collate_samples)([stage.dataset[int(i)] for i in first])
        losses = method(batch, progress=0.0, step=0)
        losses["loss"].backward()
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    unreached = [name for name, p in trainable if p.grad is None]
    for name, p in trainable:
        p.grad = None
        if name in unreached:
            p.requires_grad_(False)
    with torch.no_grad():
        for name, value in method.named_buffers():
            value.copy_(buffers[name])
    return unreached


def train_stage(stage: Stage, config: Any, folder: Path, checkpoint: Path | None,
                selector: Callable[[], dict[str, Any]] | None, history: SelectionHistory | None) -> int:
    """Train one stage in ``folder``; with ``selector``, keep its best-scoring weights.
    Returns the steps trained."""
    from personvl.training.task import TrainingTask
    from personvl.training.trainer import build_trainer

    freeze_parameters_without_gradient(stage)
    trainer_config = dataclasses.replace(config.trainer, max_steps=stage.max_steps)
    task = TrainingTask(stage.method, stage.optim, stage.max_steps, trainer_config.max_nonfinite_in_row,
                        seed=trainer_config.seed)
    trainer = build_trainer(trainer_config, folder)
    if selector is not None:
        # Before the checkpoint callback, so a checkpoint holds the scores of its own step.
        trainer.callbacks.insert(0, SelectOnValidation(selector, stage.method, history, config.selection.every_n_steps))
    trainer.fit(task, datamodule=StageData(stage, config.data.workers), ckpt_path=checkpoint)
    if selector is not None and trainer.is_global_zero:
        history.restore_best(stage.method)
    return trainer.global_step


# ---------------------------------------------------------------------------------------------
# Splits


def validation_split(task: Task, data: TaskData) -> str | None:
    """The split that selects the model: ``data.val_split``, or for "auto" the dataset's
    ``val`` split where it has one and the protocol does not report test figures on it."""
    from personvl.data import dataset_splits

    if data.val_split in NO_SPLIT:
        return None
    if data.val_split != "auto":
        return data.val_split
    splits = dataset_splits(data.dataset, data.root, **data.options)
    test = task.test_splits(data.dataset, data.root, data.options)
    return "val" if "val" in splits and task.protocol_split(data.dataset, "val") not in test else None


def refuse_test_splits(task: Task, config: Any) -> None:
    """Refuse a training or selection split that is the split the test figures come from."""
    data = config.data
    target = config.evaluation
    if (target.dataset or data.dataset) != data.dataset or (target.root and target.root != data.root):
        test = {target.split} if target.split == "test" else set()
        test |= {"test"}
    else:
        test = {"test", *task.test_splits(data.dataset, data.root, data.options)}
    for key, split in (("data.train_split", data.train_split), ("data.val_split", data.val_split)):
        if split in NO_SPLIT or split == "auto":
            continue
        if split in test or task.protocol_split(data.dataset, split) in test:
            raise UsageError(f"{key}={split!r} is the split {data.dataset}'s test figures come from: training and "
                             f"model selection must not read it (set data.val_split to another split or to null "
                             f"with data.holdout_fraction)")


def selection_data(task: Task, config: Any, train) -> tuple[Any, Any, str | None]:
    """(training records, selection inputs or None, the selection's name)."""
    data = config.data
    val_split = validation_split(task, data)
    if val_split is not None:
        return train, task.read_inputs(data.dataset, data.root, val_split, data.options, data.skip_missing), val_split
    if data.holdout_fraction > 0:
        kept, held = task.holdout(list(train), data.holdout_fraction, config.trainer.seed)
        return _like(train, kept), task.inputs(_like(train, held)), f"holdout {data.holdout_fraction:g} of train"
    return train, None, None


def _like(records, items):
    """``items`` in the container type of ``records`` (keeping its names, attribute names ...)."""
    copy = getattr(records, "with_records", None)
    return copy(items) if copy is not None else items


def evaluation_place(config: Any) -> tuple[str, str, bool]:
    """(dataset, root, cross-domain?) of the final evaluation."""
    target: EvaluationTarget = config.evaluation
    dataset = target.dataset or config.data.dataset
    root = target.root or (config.data.root if dataset == config.data.dataset else None)
    if not root:
        raise UsageError(f"evaluation.root: give the folder of {dataset}")
    cross = dataset != config.data.dataset or Path(root).resolve() != Path(config.data.root).resolve()
    return dataset, root, cross


# ---------------------------------------------------------------------------------------------
# The driver


def run(task: str | Task, config: Any, overrides: Sequence[str] = (), *, resume: bool = False,
        echo=print) -> dict[str, Any]:
    """Fine-tune (or linearly probe) for ``task`` as ``config`` says (a config object, or a YAML
    path with dotted ``overrides``), select, save ``model/``, evaluate once on the test split;
    returns the run summary (also ``output_dir/summary.json``; figures in ``metrics.json``)."""
    from lightning.pytorch.utilities import rank_zero_only

    from personvl.evaluation import write_report
    from personvl.models import save_model
    from personvl.tasks.heads import save_head
    from personvl.training.trainer import start_run

    task = get_task(task)
    if not isinstance(config, task.config_type):
        config = load_task_config(task, config, overrides)
    refuse_test_splits(task, config)
    started = time.perf_counter()
    out = Path(config.output_dir)
    stage_checkpoints = {name: out / name / CHECKPOINT_DIR / LAST_CHECKPOINT for name in task.stage_folders}
    if not resume and any(path.exists() for path in stage_checkpoints.values()):
        raise PersonvlError(f"{out} already holds a run; pass --resume to continue it or choose another output_dir")
    out, checkpoint = start_run(config, resume, SUMMARY_FILE)
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    encoder = open_encoder(config.model)
    train = task.read_records(config.data, config.data.train_split, relabel=task.identities)
    train, val_inputs, val_name = selection_data(task, config, train)
    metric = config.selection.metric or task.metric
    mode = getattr(config, "mode", "finetune")
    if mode == "linear_probe":
        echo(f"linear probe of {config.model.name} for {task.name} on {len(train)} {config.data.dataset} images")
        trained, selection, steps = task.probe(config, encoder, train, val_inputs, val_name)
    else:
        encoder.train()
        stages = task.stages(config, encoder, train, echo)
        history = SelectionHistory(metric, out / CHECKPOINT_DIR / BEST_WEIGHTS, val_name)
        steps, selection = 0, no_selection(0)
        for stage in stages:
            if stage.max_steps <= 0:
                continue
            folder = out / stage.name if stage.name else out
            ckpt = checkpoint if not stage.name else (stage_checkpoints.get(stage.name) if resume else None)
            ckpt = ckpt if ckpt is not None and ckpt.exists() else None
            if stage.describe:
                echo(f"{stage.describe} -> {folder}")
            selector = None
            if stage.selected and val_inputs is not None:
                def selector(stage=stage):
                    return task.score(task.trained(encoder, stages), val_inputs, config.evaluation)
            trained_steps = train_stage(stage, config, folder, ckpt, selector, history if selector else None)
            if stage.selected:
                steps = trained_steps
                selection = history.summary(trained_steps) if selector else no_selection(trained_steps)
        trained = task.trained(encoder, stages)
        trained.encoder.eval()
        if trained.head is not None:
            trained.head.eval()
    if rank_zero_only.rank != 0:
        return {"task": task.name, "steps": steps}
    write_text_atomically(out / SELECTION_FILE, json.dumps(_plain(selection), indent=1) + "\n")
    model_dir = save_model(trained.encoder, out / MODEL_DIR)
    if trained.head is not None:
        save_head(model_dir, task.name, trained.head, task.head_settings(trained.head))

    # The test split is read here, after the weights are fixed, for the first time.
    dataset, root, cross = evaluation_place(config)
    target = config.evaluation
    inputs = task.read_inputs(dataset, root, target.split, target.options, config.data.skip_missing)
    metrics = task.score(trained, inputs, target, out if target.plots else None)
    setting = (f"domain generalisation: trained on {config.data.dataset}, tested on {dataset}" if cross
               else f"trained and tested on {dataset}")
    metrics.update({"dataset": dataset, "split": task.protocol_split(dataset, target.split),
                    "train_dataset": config.data.dataset, "eval_dataset": dataset, "setting": setting})
    write_report(metrics, out, task=task.name)
    summary = {"task": task.name, "mode": mode, "model": config.model.name, "steps": steps, "selection": selection,
               "metrics": {k: metrics[k] for k in task.reported if k in metrics},
               "train_dataset": config.data.dataset, "eval_dataset": dataset, "cross_domain": cross,
               "model_dir": str(model_dir), "seconds": round(time.perf_counter() - started, 2)}
    write_text_atomically(out / SUMMARY_FILE, json.dumps(_plain(summary), indent=1) + "\n")
    return summary


def evaluate_saved(task: str | Task, model, dataset: str, root: str | os.PathLike, *, split: str = "test",
                   settings: Any = None, plots_dir: str | os.PathLike | None = None,
                   dataset_options: dict[str, Any] | None = None, skip_missing: bool = False) -> dict[str, Any]:
    """``task``'s metrics of a model on a split of a dataset: ``model`` is a saved folder (its
    head of this task is used where it holds one), a registered name, or a :class:`Trained`.
    ``settings``: the task's evaluation section (its defaults when None)."""
    task = get_task(task)
    if not isinstance(model, Trained):
        if isinstance(model, (str, os.PathLike)) and Path(model).is_dir():
            model = task.load(model)
        else:
            model = Trained(model if not isinstance(model, (str, os.PathLike)) else open_encoder(ModelSpec(str(model))))
    if settings is None:
        settings = task.config_type().evaluation
    inputs = task.read_inputs(dataset, str(root), split, dataset_options or {}, skip_missing)
    metrics = task.score(model, inputs, settings, Path(plots_dir) if plots_dir is not None else None)
    metrics.update({"dataset": dataset, "split": task.protocol_split(dataset, split)})
    return metrics


def open_encoder(spec: ModelSpec):
    from personvl.models import open_model

    return open_model(spec.name, spec.weights, tokenizer=spec.tokenizer, **spec.options)


def _plain(value: Any) -> Any:
    from personvl.tasks.heads import plain

    return plain(value)
