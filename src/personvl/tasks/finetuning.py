"""What the downstream recipes share: config sections, the run directory, model selection on a
validation split, cheap probes on frozen embeddings, task heads saved beside a model.

Model selection never looks at test data: a recipe reads its training split and, where the
dataset has one, its validation split; the validation metric picks the kept weights (every
``selection.every_n_steps`` and at the end of training), and where there is no validation
split the weights of the last step are kept. The test split is read once, by the final
evaluation, after the weights are fixed.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from personvl.errors import PersonvlError, UsageError
from personvl.training.pretrain import ModelSpec
from personvl.training.trainer import CHECKPOINT_DIR
from personvl.training.trainer import start_run as start_training_run

MODEL_DIR = "model"
SUMMARY_FILE = "summary.json"
SELECTION_FILE = "selection.json"
BEST_WEIGHTS = "best.pt"
HEAD_WEIGHTS = "task_head.safetensors"
HEAD_CONFIG = "task_head.json"


@dataclass
class FinetuneData:
    dataset: str = "cuhk-pedes"
    root: str = ""
    train_split: str = "train"
    # "auto": the dataset's "val" split when it has one, else none (the last step is kept).
    val_split: str | None = "auto"
    identities_per_batch: int = 8      # P
    images_per_identity: int = 4       # K (identity-free sets: batches of P x K images)
    workers: int = 2
    transform: str = "reid"            # augmentation recipe; size and normalisation follow the model
    skip_missing: bool = False
    options: dict[str, Any] = field(default_factory=dict)   # the format's own (variant=..., include_val=...)


@dataclass
class EvaluationTarget:
    """Where the final evaluation runs: by default the training dataset's test split; naming
    another dataset measures domain generalisation (trained on A, tested on B)."""

    dataset: str | None = None
    root: str | None = None
    split: str = "test"
    batch_size: int = 64
    plots: bool = True
    rerank: bool = False               # re-ID: k-reciprocal re-ranking
    options: dict[str, Any] = field(default_factory=dict)   # the evaluation dataset format's own


@dataclass
class SelectionConfig:
    every_n_steps: int = 0             # 0: only at the end of training
    metric: str = ""                   # empty: the task's own (R1, mAP, mA)


# How a task with a probe trains: the whole encoder, or a head on its frozen embeddings.
MODES = ("finetune", "linear_probe")


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


@dataclass
class ProbeConfig:
    """Linear probing: the encoder stays frozen, its embeddings of each split are computed once
    and only a small head learns (seconds even on CPU)."""

    steps: int = 300
    lr: float = 0.01
    weight_decay: float = 1e-4
    batch_size: int = 256


# ---------------------------------------------------------------------------------------------
# Run directory


def start_run(config: Any, resume: bool) -> tuple[Path, Path | None]:
    """Check ``config.output_dir`` against ``resume`` and write the resolved config; returns the
    directory and the checkpoint to resume from."""
    return start_training_run(config, resume, SUMMARY_FILE)


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / SUMMARY_FILE).write_text(json.dumps(_plain(summary), indent=1) + "\n", encoding="utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def open_encoder(spec: ModelSpec):
    from personvl.models import open_model

    return open_model(spec.name, spec.weights, tokenizer=spec.tokenizer, **spec.options)


def model_transform(encoder, recipe: str, train: bool):
    from personvl.data.transforms import build_transform

    preprocess = encoder.config.preprocess
    return build_transform(recipe, train=train, height=preprocess.input_size[0], width=preprocess.input_size[1],
                           mean=tuple(preprocess.mean), std=tuple(preprocess.std))


# ---------------------------------------------------------------------------------------------
# Splits


def validation_split(data: FinetuneData) -> str | None:
    """The split that selects the model: ``data.val_split``, or for "auto" the dataset's
    ``val`` split where it has one."""
    from personvl.data import dataset_splits

    if data.val_split in (None, "", "none"):
        return None
    if data.val_split != "auto":
        return data.val_split
    return "val" if "val" in dataset_splits(data.dataset, data.root, **data.options) else None


def read_split(data: FinetuneData, split: str, *, relabel: bool = False):
    """One split of the training dataset (the reader checks every image exists)."""
    import personvl.data as data_module

    records = data_module.load_dataset(data.dataset, data.root, split, skip_missing=data.skip_missing,
                                       relabel=relabel, **data.options)
    if not records:
        raise PersonvlError(f"{data.dataset} at {data.root} has no {split} records")
    return records


def evaluation_place(config: Any) -> tuple[str, str, bool]:
    """(dataset, root, cross-domain?) of the final evaluation."""
    target: EvaluationTarget = config.evaluation
    dataset = target.dataset or config.data.dataset
    root = target.root or (config.data.root if dataset == config.data.dataset else None)
    if not root:
        raise UsageError(f"evaluation.root: give the folder of {dataset}")
    cross = dataset != config.data.dataset or Path(root).resolve() != Path(config.data.root).resolve()
    return dataset, root, cross


def evaluation_setting(config: Any, eval_dataset: str, cross: bool) -> dict[str, Any]:
    """How the final figures were obtained, recorded beside them in ``metrics.json``."""
    setting = (f"domain generalisation: trained on {config.data.dataset}, tested on {eval_dataset}" if cross
               else f"trained and tested on {eval_dataset}")
    return {"train_dataset": config.data.dataset, "eval_dataset": eval_dataset, "setting": setting}


def probe_selection(history: list[dict[str, Any]], kept: int, split: str | None, metric: str) -> dict[str, Any]:
    if split is None:
        return {"split": None, "rule": "no validation split: the last step is kept", "kept_step": kept}
    return {"split": split, "metric": metric, "kept_step": kept, "history": history}


# ---------------------------------------------------------------------------------------------
# Batching


class ShuffledBatches:
    """Batches of indices in a seeded random order per epoch, for sets without identities."""

    def __init__(self, size: int, batch_size: int, seed: int = 0):
        if size < batch_size:
            raise UsageError(f"a batch of {batch_size} needs at least as many training images, the split has {size}")
        self.size, self.batch_size, self.seed, self.epoch = size, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        for start in range(0, self.size - self.batch_size + 1, self.batch_size):
            yield order[start:start + self.batch_size].tolist()

    def __len__(self) -> int:
        return self.size // self.batch_size


def training_loader(dataset, batches, workers: int, collate_fn=None):
    from personvl.data.datasets import collate_samples
    from personvl.training.resumable import ResumableDataLoader

    return ResumableDataLoader(dataset, batches, num_workers=workers, collate_fn=collate_fn or collate_samples,
                               persistent_workers=workers > 0)


def identity_batches(pids: Sequence[int], data: FinetuneData, seed: int):
    from torch.utils.data import BatchSampler

    from personvl.data.samplers import IdentitySampler

    sampler = IdentitySampler(pids, data.identities_per_batch, data.images_per_identity, seed=seed)
    return BatchSampler(sampler, data.identities_per_batch * data.images_per_identity, drop_last=True)


# ---------------------------------------------------------------------------------------------
# Model selection


Validator = Callable[[nn.Module], dict[str, Any]]


class SelectionHistory:
    """Validation scores by step and the best one; the best weights in ``path``."""

    def __init__(self, metric: str, path: Path, split: str | None):
        self.metric, self.path, self.split = metric, path, split
        self.history: list[dict[str, Any]] = []
        self.best: float | None = None
        self.best_step: int | None = None

    def record(self, step: int, metrics: dict[str, Any], module: nn.Module) -> None:
        if self.metric not in metrics:
            raise UsageError(f"selection.metric: the validation gives {', '.join(sorted(metrics))}, not {self.metric!r}")
        score = float(metrics[self.metric])
        self.history.append({"step": step, **{k: float(v) for k, v in metrics.items() if _is_number(v)}})
        if self.best is None or score > self.best:
            self.best, self.best_step = score, step
            state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            torch.save(state, tmp)
            os.replace(tmp, self.path)

    def restore_best(self, module: nn.Module) -> None:
        if self.best_step is not None and self.path.exists():
            module.load_state_dict(torch.load(self.path, map_location="cpu", weights_only=True))

    def state(self) -> dict[str, Any]:
        return {"metric": self.metric, "split": self.split, "best": self.best, "best_step": self.best_step,
                "history": self.history}

    def load(self, state: dict[str, Any]) -> None:
        self.best, self.best_step = state.get("best"), state.get("best_step")
        self.history = list(state.get("history", []))

    def summary(self, last_step: int) -> dict[str, Any]:
        if self.split is None:
            return {"split": None, "rule": "no validation split: the last step is kept", "kept_step": last_step}
        return {"split": self.split, "metric": self.metric, "best": self.best, "kept_step": self.best_step,
                "history": self.history}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


class SelectOnValidation(Callback):
    """Scores the method on the validation split every ``every_n_steps`` steps and when
    training ends; keeps the best weights (in the run's checkpoint folder, so a resumed run
    remembers them)."""

    def __init__(self, validate: Validator, history: SelectionHistory, every_n_steps: int):
        self.validate = validate
        self.history = history
        self.every_n_steps = every_n_steps
        self.last_step = -1

    @property
    def state_key(self) -> str:
        return "SelectOnValidation"

    def _score(self, trainer: pl.Trainer, pl_module) -> None:
        step = trainer.global_step
        if step == self.last_step or step == 0:
            return
        self.last_step = step
        method = pl_module.method
        was_training = method.training
        method.eval()
        try:
            with torch.no_grad():
                metrics = self.validate(method)
        finally:
            method.train(was_training)
        self.history.record(step, metrics, method)
        # Straight to the loggers: Lightning refuses self.log() in on_train_end, where the
        # last score of a run whose length is not a multiple of every_n_steps is taken.
        for logger in trainer.loggers:
            logger.log_metrics({f"val/{self.history.metric}": float(metrics[self.history.metric])}, step=step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._score(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._score(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return self.history.state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history.load(state_dict)


def train_and_select(config: Any, method: nn.Module, loader, out: Path, checkpoint: Path | None,
                     validate: Validator | None, metric: str, val_split: str | None) -> tuple[int, dict[str, Any]]:
    """Train ``method`` with the config's optimiser and trainer settings, selecting on the
    validation split when there is one; the method ends up with the kept weights. Returns
    (steps trained, selection summary)."""
    from personvl.training.task import TrainingTask
    from personvl.training.trainer import build_trainer

    task = TrainingTask(method, config.optim, config.trainer.max_steps, config.trainer.max_nonfinite_in_row,
                        seed=config.trainer.seed)
    trainer = build_trainer(config.trainer, out)
    history = SelectionHistory(metric, out / CHECKPOINT_DIR / BEST_WEIGHTS, val_split if validate else None)
    if validate is not None:
        # Before the checkpoint callback, so a checkpoint holds the scores of its own step.
        trainer.callbacks.insert(0, SelectOnValidation(validate, history, config.selection.every_n_steps))
    trainer.fit(task, train_dataloaders=loader, ckpt_path=checkpoint)
    if validate is not None:
        history.restore_best(method)
    selection = history.summary(trainer.global_step)
    (out / SELECTION_FILE).write_text(json.dumps(_plain(selection), indent=1) + "\n", encoding="utf-8")
    return trainer.global_step, selection


# ---------------------------------------------------------------------------------------------
# Probes on frozen embeddings


def embed_records(model, records, batch_size: int = 64) -> torch.Tensor:
    """[N, D] L2-normalised image embeddings of the records, in order."""
    from personvl.models.embedding import embed_images

    return torch.from_numpy(embed_images(model, [r.image_path for r in records], batch_size=batch_size, progress=False))


def fit_probe(head: nn.Module, loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
              batches: Callable[[int], torch.Tensor], probe: ProbeConfig, validate: Callable[[nn.Module], dict] | None,
              metric: str, every_n_steps: int, seed: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Train ``head`` for ``probe.steps`` Adam steps on ``loss_fn(head, batches(step))`` (index
    tensors into cached features); with ``validate``, keep the weights of the best validation
    score. Returns (history, kept step)."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=probe.lr, weight_decay=probe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, probe.steps)))))
    history: list[dict[str, Any]] = []
    best, best_step, best_state = None, probe.steps, None
    checkpoints = set(range(every_n_steps, probe.steps + 1, every_n_steps)) if every_n_steps > 0 else set()
    checkpoints.add(probe.steps)
    for step in range(1, probe.steps + 1):
        head.train()
        optimizer.zero_grad()
        loss = loss_fn(head, batches(step))
        loss.backward()
        optimizer.step()
        schedule.step()
        if validate is not None and step in checkpoints:
            head.eval()
            with torch.no_grad():
                metrics = validate(head)
            history.append({"step": step, "loss": float(loss.detach()), **{k: float(v) for k, v in metrics.items() if _is_number(v)}})
            if best is None or metrics[metric] > best:
                best, best_step = float(metrics[metric]), step
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    return history, best_step


def random_batches(size: int, batch_size: int, seed: int) -> Callable[[int], torch.Tensor]:
    def draw(step: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        if size <= batch_size:
            return torch.arange(size)
        return torch.randperm(size, generator=generator)[:batch_size]

    return draw


# ---------------------------------------------------------------------------------------------
# Task heads beside a saved model


def save_task_head(model_dir: str | os.PathLike, task: str, head: nn.Module, settings: dict[str, Any]) -> None:
    """Write a task head (attribute classifier, re-ID projection) into a saved model folder."""
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(model_dir / HEAD_WEIGHTS))
    (model_dir / HEAD_CONFIG).write_text(json.dumps({"task": task, **_plain(settings)}, indent=1) + "\n",
                                         encoding="utf-8")


def read_task_head(model_dir: str | os.PathLike, task: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """(settings, weights) of ``task``'s head in a model folder, or None when it has none."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    config_file = model_dir / HEAD_CONFIG
    if not config_file.is_file():
        return None
    settings = json.loads(config_file.read_text(encoding="utf-8"))
    if settings.get("task") != task:
        return None
    return settings, load_file(str(model_dir / HEAD_WEIGHTS))


def elapsed(started: float) -> float:
    return round(time.perf_counter() - started, 2)
