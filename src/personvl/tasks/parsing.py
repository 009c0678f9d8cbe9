"""Human parsing (LIP, PASCAL-Person-Part): a segmentation head on an encoder's multi-scale maps.

``finetune(config)`` trains the image tower and a :class:`~personvl.models.heads.SegmentationHead`
(UPerNet or FPN style) with per-pixel cross-entropy, selects the model, and reports mIoU on the
test split; ``evaluate(model, dataset, root)`` scores a fine-tuned parsing model.

Splits. ``test`` names the split a protocol reports on: LIP's and PASCAL-Person-Part's ``val``
(LIP's own test split has no masks). Model selection never reads it: it scores ``val_split``
when one is given (naming the protocol's test split is refused), else a held-out
``holdout_fraction`` of the training images, else it keeps the weights of the last step.

Images are resized to the encoder's input size (the whole image, no crop; training adds a
horizontal flip that swaps left and right part labels). Predictions are upsampled to each
mask's own size, so mIoU is computed at the annotation's resolution from one confusion matrix
over the whole split.

Outputs under ``output_dir`` (written by :func:`personvl.tasks.runner.run`): the resolved
``config.yaml``, ``checkpoints/`` and logs, the parsing model in ``model/`` (the encoder's
folder plus ``heads/parsing.safetensors`` and ``heads/parsing.json``), ``metrics.json``,
``plots/`` (overlays and per-class IoU) and ``summary.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from personvl.data.parsing_transforms import IGNORE_INDEX, flip_permutation
from personvl.errors import PersonvlError, UsageError
from personvl.tasks.runner import EvaluationTarget, SelectionConfig, Stage, Task, TaskData, Trained, task_config

PLOTS_DIR = "plots"

# The split each protocol reports results on, which ``split="test"`` stands for.
PROTOCOL_TEST_SPLITS = {"lip": "val", "pascal-person-part": "val"}


@dataclass
class ParsingData(TaskData):
    dataset: str = "lip"
    val_split: str | None = "auto"     # LIP's and PASCAL-Person-Part's val is the test split: auto finds none
    holdout_fraction: float = 0.0      # training images held out for selection when there is no val split
    batch_size: int = 16
    # SCHP's augmentation of the whole frame before it is warped to the encoder's input size
    # (the crop: LIP's protocol uses 473 x 473, set through model.options.image_size).
    scale_factor: float = 0.25
    rotation_factor: float = 30.0
    rotation_probability: float = 0.6


@dataclass
class ParsingHeadConfig:
    style: str = "upernet"             # upernet | fpn
    width: int = 256
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    dropout: float = 0.1
    backbone_lr_scale: float = 0.1     # the image tower's learning rate relative to the head's
    flip: bool = True                  # random horizontal flip (left/right part labels swapped)


@dataclass
class ParsingEvaluation(EvaluationTarget):
    batch_size: int = 32
    flip_test: bool = True             # average the scores of each frame and of its mirror image (SCHP)
    # Domain generalisation across label sets: the evaluation set's class of each predicted
    # class (LIP's 20 onto PASCAL-Person-Part's 7, say); empty: the same classes.
    class_merge: list[int] = field(default_factory=list)
    plot_images: int = 4               # images in the overlay plot (0: none)


ParsingConfig = task_config("ParsingConfig", __name__, output_dir="runs/parsing", data=ParsingData,
                            selection=lambda: SelectionConfig(every_n_steps=100), evaluation=ParsingEvaluation,
                            head=ParsingHeadConfig)


def load_parsing_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> ParsingConfig:
    from personvl.config import load_config

    return load_config(ParsingConfig, path, overrides)


def resolve_split(dataset: str, split: str) -> str:
    """The split actually read: ``test`` means the protocol's evaluation split."""
    return PROTOCOL_TEST_SPLITS.get(dataset, "test") if split == "test" else split


# ----------------------------------------------------------------------------- the model


class ParsingHead(nn.Module):
    """A segmentation head on an image tower's multi-scale maps, knowing its classes:
    ``part_names[c]`` names class c (0 is the background)."""

    def __init__(self, pyramid_channels: Sequence[int], part_names: Sequence[str], *, style: str = "upernet",
                 width: int = 256, pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1):
        super().__init__()
        from personvl.models.heads import SegmentationHead

        self.part_names = list(part_names)
        self.settings = {"style": style, "width": width, "pool_scales": list(pool_scales), "dropout": dropout,
                         "pyramid_channels": list(pyramid_channels)}
        self.segmentation = SegmentationHead(list(pyramid_channels), len(self.part_names), style=style, width=width,
                                             pool_scales=pool_scales, dropout=dropout)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.segmentation(maps)


class ParsingModel(nn.Module):
    """An encoder's image tower and a :class:`ParsingHead`: ``forward(images)`` gives class
    scores [B, C, H, W] at the input size; :meth:`predict` gives class maps at each image's
    own size."""

    def __init__(self, encoder, head: ParsingHead):
        super().__init__()
        self.encoder = encoder
        self.head = head

    @classmethod
    def build(cls, encoder, part_names: Sequence[str], *, style: str = "upernet", width: int = 256,
              pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1) -> "ParsingModel":
        """A new head for ``encoder`` predicting ``len(part_names)`` classes."""
        return cls(encoder, ParsingHead(encoder.visual.pyramid_channels, part_names, style=style, width=width,
                                        pool_scales=pool_scales, dropout=dropout))

    @property
    def part_names(self) -> list[str]:
        return self.head.part_names

    @property
    def crop_size(self) -> tuple[int, int]:
        return tuple(self.encoder.config.preprocess.input_size)

    def frame_to_network(self, image: Image.Image) -> tuple[torch.Tensor, np.ndarray]:
        """A whole frame fitted into the encoder's input (aspect kept), and the affine back."""
        from personvl.data.parsing_transforms import to_network

        preprocess = self.encoder.config.preprocess
        return to_network(image, self.crop_size, tuple(preprocess.mean), tuple(preprocess.std))

    def scores(self, images: torch.Tensor, flip_test: bool = True) -> torch.Tensor:
        """Class scores of network inputs, averaged with their mirror images' under ``flip_test``."""
        from personvl.data.parsing_transforms import flip_test_logits

        if not flip_test:
            return self(images)
        return flip_test_logits(self, images, flip_permutation(self.part_names))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.encoder.image_features(images).maps
        return F.interpolate(self.head(maps), size=images.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(self, images: Sequence[str | os.PathLike | Image.Image], flip_test: bool = True) -> list[np.ndarray]:
        """Class maps (uint8 H x W, each at its image's size) for image files or PIL images."""
        from personvl.models.transforms import open_rgb_image

        was_training = self.training
        self.eval()
        try:
            pictures = [open_rgb_image(image) for image in images]
            framed = [self.frame_to_network(picture) for picture in pictures]
            batch = torch.stack([pixels for pixels, _ in framed]).to(self.encoder.device)
            logits = self.scores(batch, flip_test)
            return [_class_map(logits[i], affine, (p.height, p.width))
                    for i, ((_, affine), p) in enumerate(zip(framed, pictures))]
        finally:
            self.train(was_training)

    def save(self, directory: str | os.PathLike) -> Path:
        """The encoder's model folder plus the head (``heads/parsing.*``)."""
        from personvl.models import save_model
        from personvl.tasks.heads import save_head

        directory = save_model(self.encoder, directory)
        save_head(directory, TASK.name, self.head, TASK.head_settings(self.head))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, device: str | torch.device | None = None) -> "ParsingModel":
        """A parsing model written by :meth:`save` (a fine-tuning run's ``model/``)."""
        trained = TASK.load(directory)
        if trained.head is None:
            raise PersonvlError(f"{directory} holds no parsing head (heads/parsing.json); "
                                f"give the model/ folder of a parsing fine-tuning run")
        model = cls(trained.encoder, trained.head)
        if device is not None:
            model.to(device)
        return model.eval()


def open_parsing_model(model: "ParsingModel | Trained | str | os.PathLike") -> ParsingModel:
    if isinstance(model, ParsingModel):
        return model
    if isinstance(model, Trained):
        if model.head is None:
            raise UsageError("parsing needs a parsing head: give the model/ folder of a parsing fine-tuning run")
        return ParsingModel(model.encoder, model.head)
    return ParsingModel.load(model)


def _class_map(logits: torch.Tensor, affine: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The class of every pixel of a frame of ``size`` from the scores of its network crop."""
    from personvl.data.parsing_transforms import to_annotation

    return to_annotation(logits, affine, size).argmax(0).to(torch.uint8).cpu().numpy()


# ----------------------------------------------------------------------------- data


def read_mask(path: str) -> np.ndarray:
    with Image.open(path) as mask:
        if mask.mode not in ("L", "P"):
            raise PersonvlError(f"{path}: a part mask must be a single-channel index PNG, got mode {mask.mode}")
        return np.array(mask, dtype=np.uint8)   # a writable copy


class ParsingTrainingSet(Dataset):
    """(image, mask) pairs through SCHP's augmentation (the whole frame scaled, rotated and
    flipped, then warped to the crop); each sample's draw is seeded by (seed, epoch, index), so
    a resumed run sees the same crops."""

    def __init__(self, records, augmentation, seed: int = 0):
        self.records = list(records)
        self.augmentation = augmentation
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from personvl.models.transforms import open_rgb_image

        record = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        pixels, labels = self.augmentation(open_rgb_image(record.image_path), read_mask(record.mask_path), rng)
        return {"images": pixels, "masks": labels}


class _EvaluationSet(Dataset):
    def __init__(self, records, model: ParsingModel):
        self.records = list(records)
        self.model = model

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        from personvl.models.transforms import open_rgb_image

        record = self.records[index]
        pixels, affine = self.model.frame_to_network(open_rgb_image(record.image_path))
        return pixels, affine, read_mask(record.mask_path)


def _collate_evaluation(items):
    return torch.stack([pixels for pixels, _, _ in items]), [affine for _, affine, _ in items], [m for _, _, m in items]


# ----------------------------------------------------------------------------- training


class ParsingMethod(nn.Module):
    """Per-pixel cross-entropy of a :class:`ParsingModel` (the trained method)."""

    def __init__(self, model: ParsingModel, backbone_lr_scale: float = 0.1):
        super().__init__()
        self.model = model
        self.backbone_lr_scale = backbone_lr_scale
        model.encoder.text.requires_grad_(False)   # parsing reads images only

    @property
    def encoder(self):
        return self.model.encoder

    @property
    def head(self) -> ParsingHead:
        return self.model.head

    def forward(self, batch: dict[str, torch.Tensor], progress: float = 0.0, step: int = 0) -> dict[str, torch.Tensor]:
        logits = self.model(batch["images"])
        from personvl.objectives import pixel_cross_entropy

        return {"loss": pixel_cross_entropy(logits, batch["masks"], ignore_index=IGNORE_INDEX)}

    def parameter_groups(self) -> list[dict]:
        return [{"name": "image_tower", "params": list(self.model.encoder.visual.parameters()),
                 "lr_scale": self.backbone_lr_scale},
                {"name": "head", "params": list(self.model.head.parameters())}]


def score_records(model: ParsingModel, records, *, batch_size: int = 32, workers: int = 0, keep: int = 0,
                  flip_test: bool = True, class_merge: Sequence[int] = (),
                  classes: int | None = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Parsing metrics of ``model`` on records with masks, computed at each mask's own
    resolution from one confusion matrix, and the class maps of the first ``keep`` images."""
    from personvl.evaluation import ConfusionMatrix

    if not records:
        raise UsageError("parsing evaluation needs at least one image")
    unmasked = next((r for r in records if r.mask_path is None), None)
    if unmasked is not None:
        raise UsageError(f"{unmasked.image_path} has no part mask: this split cannot be scored")
    matrix = ConfusionMatrix(classes or len(model.part_names), IGNORE_INDEX)
    merge = np.asarray(class_merge, dtype=np.uint8) if len(class_merge) else None
    loader = DataLoader(_EvaluationSet(records, model), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate_evaluation)
    kept: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for images, affines, masks in loader:
                logits = model.scores(images.to(model.encoder.device), flip_test)
                for i, mask in enumerate(masks):
                    prediction = _class_map(logits[i], affines[i], mask.shape)
                    if merge is not None:
                        prediction = merge[prediction]
                    matrix.add(prediction, mask)
                    if len(kept) < keep:
                        kept.append(prediction)
    finally:
        model.train(was_training)
    return matrix.metrics(), kept


def write_plots(model: ParsingModel, records, predictions: Sequence[np.ndarray], metrics: dict[str, Any],
                out_dir: str | os.PathLike, part_names: Sequence[str] | None = None) -> list[Path]:
    """Overlays of the first predictions and a bar chart of the per-class IoU."""
    from personvl.evaluation import plot_attribute_accuracy, plot_parsing_overlays

    out_dir = Path(out_dir)
    paths = []
    if predictions:
        shown = records[:len(predictions)]
        paths.append(plot_parsing_overlays([r.image_path for r in shown], list(predictions), out_dir / "parsing_overlays.png",
                                           targets=[read_mask(r.mask_path) for r in shown],
                                           part_names=list(part_names or model.part_names)))
    iou = [0.0 if v != v else v for v in metrics["per_class_iou"]]   # NaN (absent class) drawn as 0
    paths.append(plot_attribute_accuracy(iou, list(part_names or model.part_names), out_dir / "per_class_iou.png",
                                         title="Per-class IoU (%)"))
    return paths


class ParsingTask(Task):
    """A part label per pixel from the image tower's maps; the segmentation head is the head.
    ``test`` reads the protocol's evaluation split (LIP, PASCAL-Person-Part: val)."""

    name = "parsing"
    config_type = ParsingConfig
    metric = "mIoU"
    reported = ("mIoU", "pixel_accuracy")

    def protocol_split(self, dataset: str, split: str) -> str:
        return resolve_split(dataset, split)

    def stages(self, config: ParsingConfig, encoder, train, echo) -> list[Stage]:
        from personvl.data.parsing_transforms import ParsingAugmentation
        from personvl.data.samplers import ShuffledBatches

        part_names = getattr(train, "part_names", None)
        if not part_names:
            raise UsageError(f"{config.data.dataset} is not a parsing dataset (its records carry no part masks)")
        head = config.head
        model = ParsingModel.build(encoder, part_names, style=head.style, width=head.width,
                                   pool_scales=head.pool_scales, dropout=head.dropout)
        preprocess = encoder.config.preprocess
        data = config.data
        augmentation = ParsingAugmentation(tuple(preprocess.input_size), tuple(preprocess.mean), tuple(preprocess.std),
                                           flip_permutation(part_names) if head.flip else None,
                                           scale_factor=data.scale_factor, rotation_factor=data.rotation_factor,
                                           rotation_probability=data.rotation_probability)
        dataset = ParsingTrainingSet(list(train), augmentation, seed=config.trainer.seed)
        size, batch, seed = len(dataset), config.data.batch_size, config.trainer.seed
        return [Stage("", ParsingMethod(model, head.backbone_lr_scale), dataset,
                      lambda rank, world: ShuffledBatches(size, batch, seed=seed, rank=rank, world_size=world),
                      config.optim, config.trainer.max_steps,
                      describe=f"fine-tuning parsing ({config.model.name}, {head.style} head) on {size} "
                               f"{config.data.dataset} images for {config.trainer.max_steps} steps")]

    def score(self, model: Trained, records, settings: ParsingEvaluation, plots_dir: Path | None = None) -> dict[str, Any]:
        parser = open_parsing_model(model)
        part_names = getattr(records, "part_names", None) or parser.part_names
        merge = list(getattr(settings, "class_merge", None) or [])
        if merge and (len(merge) != len(parser.part_names) or not all(0 <= c < len(part_names) for c in merge)):
            raise UsageError(f"evaluation.class_merge must give one of the data's {len(part_names)} classes for each "
                             f"of the model's {len(parser.part_names)}, got {merge}")
        if not merge and len(part_names) != len(parser.part_names):
            raise UsageError(f"the model predicts {len(parser.part_names)} part classes but the data has "
                             f"{len(part_names)} ({', '.join(part_names)}); give evaluation.class_merge")
        keep = getattr(settings, "plot_images", 0) if plots_dir is not None else 0
        metrics, predictions = score_records(parser, list(records), batch_size=settings.batch_size, keep=keep,
                                             flip_test=getattr(settings, "flip_test", True), class_merge=merge,
                                             classes=len(part_names))
        metrics["images"] = len(records)
        if keep:
            write_plots(parser, list(records), predictions, metrics, Path(plots_dir) / PLOTS_DIR, part_names)
        return metrics

    def head_settings(self, head: ParsingHead) -> dict[str, Any]:
        return {"kind": "segmentation", **head.settings, "part_names": head.part_names}

    def build_head(self, settings: dict[str, Any], encoder) -> nn.Module:
        return ParsingHead(settings["pyramid_channels"], settings["part_names"], style=settings["style"],
                           width=int(settings["width"]), pool_scales=settings["pool_scales"],
                           dropout=float(settings["dropout"]))


TASK = ParsingTask()


def finetune(config: ParsingConfig | str | os.PathLike, overrides: Sequence[str] = (), *, resume: bool = False,
             echo=print) -> dict[str, Any]:
    """Fine-tune a parsing model; returns the run summary (also ``output_dir/summary.json``)."""
    from personvl.tasks.runner import run

    return run(TASK, config, overrides, resume=resume, echo=echo)


def evaluate(model: ParsingModel | str | os.PathLike, dataset: str, root: str | os.PathLike, *, split: str = "test",
             batch_size: int = 32, plots_dir: str | os.PathLike | None = None, plot_images: int = 4,
             skip_missing: bool = False, dataset_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU (percent) of a parsing model (a
    :class:`ParsingModel` or the ``model/`` folder of a fine-tuning run) on one split;
    ``split="test"`` is the protocol's evaluation split. ``plots_dir``: also write the plots."""
    from personvl.tasks.runner import evaluate_saved

    if isinstance(model, ParsingModel):
        model = Trained(model.encoder, model.head)
    metrics = evaluate_saved(TASK, model, dataset, root, split=split,
                             settings=ParsingEvaluation(batch_size=batch_size, plot_images=plot_images),
                             plots_dir=plots_dir,
                             dataset_options=dataset_options, skip_missing=skip_missing)
    metrics["split"] = resolve_split(dataset, split)
    return metrics
