"""Human parsing (LIP, PASCAL-Person-Part): a segmentation head on an encoder's multi-scale maps.

``finetune(config)`` trains the image tower and a :class:`~personvl.models.heads.SegmentationHead`
(UPerNet or FPN style) with per-pixel cross-entropy, selects the model, and reports mIoU on the
test split; ``evaluate(model, dataset, root)`` scores a fine-tuned parsing model.

Splits. ``test`` names the split a protocol reports on: LIP's and PASCAL-Person-Part's ``val``
(LIP's own test split has no masks). Model selection never reads it: it scores ``val_split``
when one is given, else a held-out ``holdout_fraction`` of the training images, else it keeps
the weights of the last step.

Images are resized to the encoder's input size (the whole image, no crop; training adds a
horizontal flip that swaps left and right part labels). Predictions are upsampled to each
mask's own size, so mIoU is computed at the annotation's resolution from one confusion matrix
over the whole split.

Outputs under ``output_dir``: the resolved ``config.yaml``, ``checkpoints/`` and logs, the
parsing model in ``model/`` (the encoder's folder plus ``parsing_head.safetensors`` and
``parsing_head.json``), ``metrics.json``, ``plots/`` (overlays and per-class IoU) and
``summary.json``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from personvl.config import load_config
from personvl.errors import PersonvlError, UsageError
from personvl.training.optim import OptimConfig
from personvl.training.pretrain import ModelSpec
from personvl.training.resumable import ResumableDataLoader
from personvl.training.task import TrainingTask
from personvl.training.trainer import TrainerConfig, build_trainer, start_run

MODEL_DIR = "model"
SUMMARY_FILE = "summary.json"
PLOTS_DIR = "plots"
HEAD_WEIGHTS_FILE = "parsing_head.safetensors"
HEAD_CONFIG_FILE = "parsing_head.json"
BEST_WEIGHTS_FILE = "selection/best.safetensors"
IGNORE_INDEX = 255

# The split each protocol reports results on, which ``split="test"`` stands for.
PROTOCOL_TEST_SPLITS = {"lip": "val", "pascal-person-part": "val"}


@dataclass
class ParsingDataConfig:
    dataset: str = "lip"
    root: str = ""
    train_split: str = "train"
    val_split: str | None = None       # model selection split; None: holdout_fraction, else the last step
    test_split: str = "test"           # "test": the protocol's evaluation split (LIP / PASCAL-Person-Part: val)
    holdout_fraction: float = 0.0      # training images held out for selection when val_split is None
    batch_size: int = 16
    workers: int = 2
    skip_missing: bool = False


@dataclass
class ParsingHeadConfig:
    style: str = "upernet"             # upernet | fpn
    width: int = 256
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    dropout: float = 0.1
    backbone_lr_scale: float = 0.1     # the image tower's learning rate relative to the head's
    flip: bool = True                  # random horizontal flip (left/right part labels swapped)
    select_every_n_steps: int = 100    # how often the selection split is scored (and at the end)


@dataclass
class ParsingEvalConfig:
    batch_size: int = 32
    plot_images: int = 4               # images in the overlay plot (0: no plots)


@dataclass
class ParsingConfig:
    output_dir: str = "runs/parsing"
    data: ParsingDataConfig = field(default_factory=ParsingDataConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    head: ParsingHeadConfig = field(default_factory=ParsingHeadConfig)
    evaluation: ParsingEvalConfig = field(default_factory=ParsingEvalConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.data.holdout_fraction < 1.0:
            raise UsageError(f"data.holdout_fraction must be in [0, 1), got {self.data.holdout_fraction}")
        test = resolve_split(self.data.dataset, self.data.test_split)
        if self.data.val_split is not None and resolve_split(self.data.dataset, self.data.val_split) == test:
            raise UsageError(f"data.val_split {self.data.val_split!r} is the test split of {self.data.dataset}: "
                             f"model selection must not read it (leave val_split empty and set data.holdout_fraction)")


def load_parsing_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> ParsingConfig:
    return load_config(ParsingConfig, path, overrides)


def resolve_split(dataset: str, split: str) -> str:
    """The split actually read: ``test`` means the protocol's evaluation split."""
    return PROTOCOL_TEST_SPLITS.get(dataset, "test") if split == "test" else split


# ----------------------------------------------------------------------------- the model


def flip_permutation(part_names: Sequence[str]) -> list[int]:
    """Label of each class after a horizontal flip: ``Left-x`` and ``Right-x`` swap."""
    index = {name.lower(): i for i, name in enumerate(part_names)}
    permutation = list(range(len(part_names)))
    for i, name in enumerate(part_names):
        lowered = name.lower()
        for side, other in (("left-", "right-"), ("right-", "left-")):
            if lowered.startswith(side) and other + lowered[len(side):] in index:
                permutation[i] = index[other + lowered[len(side):]]
    return permutation


class ParsingModel(nn.Module):
    """An encoder's image tower and a segmentation head: ``forward(images)`` gives class
    scores [B, C, H, W] at the input size; :meth:`predict` gives class maps at each image's
    own size. ``part_names[c]`` names class c (0 is the background)."""

    def __init__(self, encoder, head: nn.Module, part_names: Sequence[str], head_config: dict[str, Any]):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.part_names = list(part_names)
        self.head_config = dict(head_config)

    @classmethod
    def build(cls, encoder, part_names: Sequence[str], *, style: str = "upernet", width: int = 256,
              pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1) -> "ParsingModel":
        """A new head for ``encoder`` predicting ``len(part_names)`` classes."""
        from personvl.models.heads import SegmentationHead

        head_config = {"style": style, "width": width, "pool_scales": list(pool_scales), "dropout": dropout}
        head = SegmentationHead(encoder.visual.pyramid_channels, len(part_names), **head_config)
        return cls(encoder, head, part_names, head_config)

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.encoder.config.preprocess.input_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.encoder.image_features(images).maps
        return F.interpolate(self.head(maps), size=images.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(self, images: Sequence[str | os.PathLike | Image.Image]) -> list[np.ndarray]:
        """Class maps (uint8 H x W, each at its image's size) for image files or PIL images."""
        from personvl.models.transforms import open_rgb_image

        was_training = self.training
        self.eval()
        try:
            pictures = [open_rgb_image(image) for image in images]
            batch = torch.stack([self.encoder.image_transform(p) for p in pictures]).to(self.encoder.device)
            logits = self(batch)
            return [_class_map(logits[i], (p.height, p.width)) for i, p in enumerate(pictures)]
        finally:
            self.train(was_training)

    def save(self, directory: str | os.PathLike) -> Path:
        """The encoder's model folder plus the head's weights and description."""
        from safetensors.torch import save_file

        from personvl.models import save_model

        directory = save_model(self.encoder, directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        _write_atomically(directory / HEAD_WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
        document = {**self.head_config, "part_names": self.part_names}
        _write_atomically(directory / HEAD_CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(document, indent=1) + "\n"))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, device: str | torch.device | None = None) -> "ParsingModel":
        """A parsing model written by :meth:`save` (``finetune``'s ``model/``)."""
        from safetensors.torch import load_file

        from personvl.models import load_model

        directory = Path(directory)
        config_path = directory / HEAD_CONFIG_FILE
        if not config_path.is_file():
            raise PersonvlError(f"{directory} holds no parsing head ({HEAD_CONFIG_FILE}); "
                                f"give the model/ folder of a parsing fine-tuning run")
        document = json.loads(config_path.read_text(encoding="utf-8"))
        part_names = document.pop("part_names")
        model = cls.build(load_model(directory), part_names, **document)
        missing, unexpected = model.head.load_state_dict(load_file(str(directory / HEAD_WEIGHTS_FILE)), strict=False)
        if missing or unexpected:
            raise PersonvlError(f"{directory / HEAD_WEIGHTS_FILE} does not match its head description: "
                                f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        if device is not None:
            model.to(device)
        return model.eval()


def open_parsing_model(model: "ParsingModel | str | os.PathLike") -> ParsingModel:
    return model if isinstance(model, ParsingModel) else ParsingModel.load(model)


def _class_map(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    scores = F.interpolate(logits[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return scores.argmax(0).to(torch.uint8).cpu().numpy()


def _write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- data


def read_mask(path: str) -> np.ndarray:
    with Image.open(path) as mask:
        if mask.mode not in ("L", "P"):
            raise PersonvlError(f"{path}: a part mask must be a single-channel index PNG, got mode {mask.mode}")
        return np.array(mask, dtype=np.uint8)   # a writable copy


class ParsingTrainingSet(Dataset):
    """(image, mask) pairs resized to the model's input size, optionally flipped."""

    def __init__(self, records, transform, size: tuple[int, int], flip_table: np.ndarray | None):
        self.records = list(records)
        self.transform = transform
        self.size = size
        self.flip_table = flip_table

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from personvl.models.transforms import open_rgb_image

        record = self.records[index]
        image = open_rgb_image(record.image_path)
        with Image.open(record.mask_path) as opened:
            mask = opened.resize((self.size[1], self.size[0]), Image.NEAREST)
        labels = np.asarray(mask, dtype=np.int64)
        pixels = self.transform(image)
        if self.flip_table is not None and torch.rand(()) < 0.5:
            pixels = pixels.flip(-1)
            labels = self.flip_table[labels[:, ::-1]]
        return {"images": pixels, "masks": torch.from_numpy(np.ascontiguousarray(labels))}


class _EvaluationSet(Dataset):
    def __init__(self, records, transform):
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        from personvl.models.transforms import open_rgb_image

        record = self.records[index]
        return self.transform(open_rgb_image(record.image_path)), read_mask(record.mask_path)


def _collate_evaluation(items):
    return torch.stack([image for image, _ in items]), [mask for _, mask in items]


class EpochShuffleSampler(Sampler[int]):
    """A permutation of ``0..n-1`` per epoch, deterministic in (seed, epoch); under DDP each
    rank takes every world-size-th index of it."""

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        return iter(order[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))


class _TrainingData(pl.LightningDataModule):
    def __init__(self, dataset: Dataset, batch_size: int, workers: int, seed: int, collate=None):
        super().__init__()
        self.dataset, self.batch_size, self.workers, self.seed, self.collate = dataset, batch_size, workers, seed, collate

    def train_dataloader(self) -> ResumableDataLoader:
        sampler = EpochShuffleSampler(len(self.dataset), self.seed, self.trainer.global_rank, self.trainer.world_size)
        batches = BatchSampler(sampler, min(self.batch_size, len(sampler)), drop_last=True)
        return ResumableDataLoader(self.dataset, batches, num_workers=self.workers, collate_fn=self.collate,
                                   persistent_workers=self.workers > 0)


# ----------------------------------------------------------------------------- training


class ParsingMethod(nn.Module):
    """Per-pixel cross-entropy of a :class:`ParsingModel` (the trained method)."""

    def __init__(self, model: ParsingModel, backbone_lr_scale: float = 0.1):
        super().__init__()
        self.model = model
        self.backbone_lr_scale = backbone_lr_scale
        model.encoder.text.requires_grad_(False)   # parsing reads images only

    def forward(self, batch: dict[str, torch.Tensor], progress: float = 0.0, step: int = 0) -> dict[str, torch.Tensor]:
        logits = self.model(batch["images"])
        return {"loss": F.cross_entropy(logits, batch["masks"], ignore_index=IGNORE_INDEX)}

    def parameter_groups(self) -> list[dict]:
        return [{"name": "image_tower", "params": list(self.model.encoder.visual.parameters()),
                 "lr_scale": self.backbone_lr_scale},
                {"name": "head", "params": list(self.model.head.parameters())}]


def _selected_state(model: ParsingModel) -> dict[str, torch.Tensor]:
    """What fine-tuning changes: the image tower and the head (not the idle text tower)."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()
            if k.startswith(("encoder.visual.", "head."))}


class SelectOnValidation(pl.Callback):
    """Scores the selection split every ``every_n_steps`` steps and at the last step, and keeps
    the best-scoring weights in ``path`` (its score and step travel in the checkpoints)."""

    def __init__(self, score: Callable[[], float], model: nn.Module, state: Callable[[nn.Module], dict],
                 path: Path, every_n_steps: int, total_steps: int):
        self.score, self.model, self.state, self.path = score, model, state, Path(path)
        self.every_n_steps, self.total_steps = max(1, every_n_steps), total_steps
        self.best_score, self.best_step, self.last_scored_step = -float("inf"), -1, -1
        self.history: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self.last_scored_step or (step % self.every_n_steps and step < self.total_steps):
            return
        self.last_scored_step = step
        was_training = self.model.training
        self.model.eval()
        try:
            value = float(self.score())
        finally:
            self.model.train(was_training)
        self.history.append((step, value))
        pl_module.log("val/score", value)
        if value > self.best_score:
            self.best_score, self.best_step = value, step
            if trainer.is_global_zero:
                from safetensors.torch import save_file

                self.path.parent.mkdir(parents=True, exist_ok=True)
                _write_atomically(self.path, lambda tmp: save_file(self.state(self.model), str(tmp)))

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_step": self.best_step, "last_scored_step": self.last_scored_step,
                "history": [list(item) for item in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score, self.best_step = state["best_score"], state["best_step"]
        self.last_scored_step = state["last_scored_step"]
        self.history = [tuple(item) for item in state.get("history", [])]

    def restore_best(self) -> None:
        from safetensors.torch import load_file

        unknown = self.model.load_state_dict(load_file(str(self.path)), strict=False).unexpected_keys
        if unknown:
            raise PersonvlError(f"{self.path} holds weights the model does not have, e.g. {sorted(unknown)[0]}")


def score_records(model: ParsingModel, records, *, batch_size: int = 32, workers: int = 0,
                  keep: int = 0) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Parsing metrics of ``model`` on records with masks, and the class maps of the first
    ``keep`` images (for plots)."""
    from personvl.evaluation import ConfusionMatrix

    if not records:
        raise UsageError("parsing evaluation needs at least one image")
    unmasked = next((r for r in records if r.mask_path is None), None)
    if unmasked is not None:
        raise UsageError(f"{unmasked.image_path} has no part mask: this split cannot be scored")
    matrix = ConfusionMatrix(len(model.part_names), IGNORE_INDEX)
    loader = DataLoader(_EvaluationSet(records, model.encoder.image_transform), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate_evaluation)
    kept: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for images, masks in loader:
                logits = model(images.to(model.encoder.device))
                for i, mask in enumerate(masks):
                    prediction = _class_map(logits[i], mask.shape)
                    matrix.add(prediction, mask)
                    if len(kept) < keep:
                        kept.append(prediction)
    finally:
        model.train(was_training)
    return matrix.metrics(), kept


def _holdout(records: Sequence, fraction: float, seed: int) -> tuple[list, list]:
    order = np.random.default_rng(seed).permutation(len(records))
    count = max(1, int(round(len(records) * fraction)))
    held = set(order[:count].tolist())
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def write_plots(model: ParsingModel, records, predictions: Sequence[np.ndarray], metrics: dict[str, Any],
                out_dir: str | os.PathLike) -> list[Path]:
    """Overlays of the first predictions and a bar chart of the per-class IoU."""
    from personvl.evaluation import plot_attribute_accuracy, plot_parsing_overlays

    out_dir = Path(out_dir)
    paths = []
    if predictions:
        shown = records[:len(predictions)]
        paths.append(plot_parsing_overlays([r.image_path for r in shown], list(predictions), out_dir / "parsing_overlays.png",
                                           targets=[read_mask(r.mask_path) for r in shown], part_names=model.part_names))
    iou = [0.0 if v != v else v for v in metrics["per_class_iou"]]   # NaN (absent class) drawn as 0
    paths.append(plot_attribute_accuracy(iou, model.part_names, out_dir / "per_class_iou.png", title="Per-class IoU (%)"))
    return paths


def finetune(config: ParsingConfig | str | os.PathLike, overrides: Sequence[str] = (), *, resume: bool = False,
             echo=print) -> dict[str, Any]:
    """Fine-tune a parsing model; returns the run summary (also ``output_dir/summary.json``)."""
    from torchvision import transforms as T

    from personvl.data import load_dataset
    from personvl.data.transforms import ToNormalizedTensor
    from personvl.evaluation import write_report
    from personvl.models import open_model

    if not isinstance(config, ParsingConfig):
        config = load_parsing_config(config, overrides)
    started = time.perf_counter()
    out, checkpoint = start_run(config, resume)
    data = config.data
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)

    train = load_dataset(data.dataset, data.root, resolve_split(data.dataset, data.train_split),
                         skip_missing=data.skip_missing)
    part_names = train.part_names
    if not part_names:
        raise UsageError(f"{data.dataset} is not a parsing dataset (its records carry no part masks)")
    train_records, selection_records, selection = list(train), [], "last step"
    if data.val_split is not None:
        selection_records = list(load_dataset(data.dataset, data.root, resolve_split(data.dataset, data.val_split),
                                              skip_missing=data.skip_missing))
        selection = f"{data.dataset} {data.val_split}"
    elif data.holdout_fraction > 0:
        train_records, selection_records = _holdout(train_records, data.holdout_fraction, config.trainer.seed)
        selection = f"{len(selection_records)} held-out training images"
    if not train_records:
        raise PersonvlError(f"{data.dataset} at {data.root} has no {data.train_split} images")

    encoder = open_model(config.model.name, config.model.weights, tokenizer=config.model.tokenizer,
                         **config.model.options).train()
    head = config.head
    model = ParsingModel.build(encoder, part_names, style=head.style, width=head.width, pool_scales=head.pool_scales,
                               dropout=head.dropout)
    method = ParsingMethod(model, head.backbone_lr_scale)
    flip_table = np.array(flip_permutation(part_names) + [IGNORE_INDEX] * (256 - len(part_names)), dtype=np.int64)
    preprocess = encoder.config.preprocess
    transform = T.Compose([T.Resize(tuple(preprocess.input_size), interpolation=T.InterpolationMode.BILINEAR),
                           ToNormalizedTensor(tuple(preprocess.mean), tuple(preprocess.std))])
    dataset = ParsingTrainingSet(train_records, transform, tuple(preprocess.input_size), flip_table if head.flip else None)
    task = TrainingTask(method, config.optim, config.trainer.max_steps, config.trainer.max_nonfinite_in_row,
                        seed=config.trainer.seed)
    trainer = build_trainer(config.trainer, out)
    selector = None
    if selection_records:
        selector = SelectOnValidation(
            lambda: score_records(model, selection_records, batch_size=config.evaluation.batch_size)[0]["mIoU"],
            model, _selected_state, out / BEST_WEIGHTS_FILE, head.select_every_n_steps, config.trainer.max_steps)
        trainer.callbacks.insert(0, selector)   # before the checkpoint callback, so checkpoints hold its state
    echo(f"fine-tuning parsing ({config.model.name}, {head.style} head) on {len(train_records)} {data.dataset} images "
         f"for {config.trainer.max_steps} steps, selecting on {selection} -> {out}")
    trainer.fit(task, datamodule=_TrainingData(dataset, data.batch_size, data.workers, config.trainer.seed),
                ckpt_path=checkpoint)

    summary: dict[str, Any] = {"task": "parsing", "dataset": data.dataset, "model": config.model.name,
                               "weights": config.model.weights, "steps": trainer.global_step, "selection": selection}
    if selector is not None and selector.best_step >= 0:
        selector.restore_best()
        summary.update(selected_step=selector.best_step, selection_mIoU=selector.best_score,
                       selection_history=[list(item) for item in selector.history])
    else:
        summary["selected_step"] = trainer.global_step
    if not trainer.is_global_zero:
        return summary
    model.eval()
    model.save(out / MODEL_DIR)
    # The test split is read here, after selection, for the first time.
    test_split = resolve_split(data.dataset, data.test_split)
    test = load_dataset(data.dataset, data.root, test_split, skip_missing=data.skip_missing)
    metrics, predictions = score_records(model, list(test), batch_size=config.evaluation.batch_size,
                                         keep=config.evaluation.plot_images)
    metrics.update(split=test_split, images=len(test), selected_step=summary["selected_step"], selection=selection)
    write_report(metrics, out, name=out.name, task="parsing")
    plots = write_plots(model, list(test), predictions, metrics, out / PLOTS_DIR) if config.evaluation.plot_images else []
    summary.update(model_dir=str(out / MODEL_DIR), metrics={k: metrics[k] for k in ("mIoU", "pixel_accuracy")},
                   plots=[str(p) for p in plots], seconds=round(time.perf_counter() - started, 2))
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def evaluate(model: ParsingModel | str | os.PathLike, dataset: str, root: str | os.PathLike, *, split: str = "test",
             batch_size: int = 32, workers: int = 0, plots_dir: str | os.PathLike | None = None,
             plot_images: int = 4, skip_missing: bool = False) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU (percent) of a parsing model (a
    :class:`ParsingModel` or the ``model/`` folder of a fine-tuning run) on one split;
    ``split="test"`` is the protocol's evaluation split. ``plots_dir``: also write the plots."""
    from personvl.data import load_dataset

    model = open_parsing_model(model)
    split = resolve_split(dataset, split)
    records = load_dataset(dataset, root, split, skip_missing=skip_missing)
    if records.part_names is not None and len(records.part_names) != len(model.part_names):
        raise UsageError(f"the model predicts {len(model.part_names)} part classes but {dataset} has "
                         f"{len(records.part_names)} ({', '.join(records.part_names)})")
    metrics, predictions = score_records(model, list(records), batch_size=batch_size, workers=workers,
                                         keep=plot_images if plots_dir is not None else 0)
    metrics.update(split=split, images=len(records))
    if plots_dir is not None:
        write_plots(model, list(records), predictions, metrics, plots_dir)
    return metrics
