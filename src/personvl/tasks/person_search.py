"""Person search (PRW, CUHK-SYSU), two-stage: a person detector on whole scene frames, then the
re-ID encoder on the detected crops, scored with the CUHK-SYSU / PRW protocol.

The detector is torchvision's Faster R-CNN (``fasterrcnn_mobilenet_v3_large_fpn`` or
``fasterrcnn_resnet50_fpn``) with one person class. It is built without downloading anything:
``detector.weights`` loads a whole detector (torchvision's COCO file, or a previous run's
``model/detector.safetensors``; parts whose shapes differ, such as COCO's 91-class predictor,
are left new and reported), ``detector.weights_backbone`` an ImageNet backbone. With
``detector.train`` it is fine-tuned on the person boxes of the training frames. ``detector.name:
gt`` uses the ground-truth boxes instead, which measures the re-ID part alone.

The re-ID encoder is any model folder or registered name (``model``); ``reid.max_steps > 0``
fine-tunes it first on the labelled training crops (identity loss + batch-hard triplet, P x K
batches). Queries are the protocol's query boxes cropped from their frames.

Neither set has a validation split, so the weights of the last step are kept: the test frames
and queries are read only for the final evaluation. Outputs under ``output_dir``: the resolved
``config.yaml``, ``detector/`` and ``reid/`` runs (checkpoints and logs), ``model/`` (the
encoder's folder plus ``detector.safetensors`` and ``detector.json``), ``metrics.json``,
``plots/search_results.png`` and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import BatchSampler, Dataset

from personvl.config import load_config, save_config
from personvl.errors import PersonvlError, UsageError
from personvl.tasks.parsing import EpochShuffleSampler
from personvl.training.optim import OptimConfig
from personvl.training.pretrain import ModelSpec
from personvl.training.resumable import ResumableDataLoader
from personvl.training.task import TrainingTask
from personvl.training.trainer import TrainerConfig, build_trainer, latest_checkpoint

MODEL_DIR = "model"
DETECTOR_RUN = "detector"
REID_RUN = "reid"
PLOTS_DIR = "plots"
SUMMARY_FILE = "summary.json"
DETECTOR_WEIGHTS_FILE = "detector.safetensors"
DETECTOR_CONFIG_FILE = "detector.json"
GROUND_TRUTH = "gt"
DETECTORS = ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn")


@dataclass
class SearchDataConfig:
    dataset: str = "prw"
    root: str = ""
    train_split: str = "train"
    query_split: str = "query"
    gallery_split: str = "gallery"
    workers: int = 2
    skip_missing: bool = False


@dataclass
class DetectorConfig:
    name: str = "fasterrcnn_mobilenet_v3_large_fpn"   # or fasterrcnn_resnet50_fpn, or gt (ground-truth boxes)
    weights: str | None = None            # a whole detector's state dict (.pth / .safetensors)
    weights_backbone: str | None = None   # an ImageNet backbone state dict
    train: bool = True                    # fine-tune on the training frames (trainer.max_steps steps)
    batch_size: int = 2
    min_size: int = 800                   # frames are resized so the short side is min_size ...
    max_size: int = 1333                  # ... and the long side at most max_size
    representation_size: int = 1024       # the box head's width
    proposals: int = 1000                 # region proposals kept per frame after NMS (training)
    score_thresh: float = 0.05
    detections_per_img: int = 100
    flip: bool = True


@dataclass
class ReidConfig:
    max_steps: int = 0                    # 0: use the encoder as given
    lr: float = 3.5e-4
    identities_per_batch: int = 8         # P
    images_per_identity: int = 2          # K
    id_weight: float = 1.0
    triplet_weight: float = 1.0
    triplet_margin: float = 0.3
    box_jitter: float = 0.05              # random shift of each crop's box, in box sizes


@dataclass
class SearchEvalConfig:
    det_thresh: float = 0.5
    iou_thresh: float = 0.5
    exclude_same_camera: bool = False
    batch_size: int = 64
    plot_queries: int = 4                 # queries drawn in plots/search_results.png (0: none)


@dataclass
class SearchConfig:
    output_dir: str = "runs/search"
    data: SearchDataConfig = field(default_factory=SearchDataConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    optim: OptimConfig = field(default_factory=OptimConfig)         # the detector's
    trainer: TrainerConfig = field(default_factory=TrainerConfig)   # the detector's run; reid.max_steps for re-ID
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    reid: ReidConfig = field(default_factory=ReidConfig)
    evaluation: SearchEvalConfig = field(default_factory=SearchEvalConfig)

    def __post_init__(self) -> None:
        if self.detector.name not in (*DETECTORS, GROUND_TRUTH):
            raise UsageError(f"detector.name must be one of {', '.join((*DETECTORS, GROUND_TRUTH))}, "
                             f"got {self.detector.name!r}")
        splits = {self.data.query_split, self.data.gallery_split}
        if self.data.train_split in splits:
            raise UsageError(f"data.train_split {self.data.train_split!r} is a test split: training must not read it")


def load_search_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> SearchConfig:
    return load_config(SearchConfig, path, overrides)


# ----------------------------------------------------------------------------- detector


def build_detector(config: DetectorConfig, echo=print) -> nn.Module:
    """A one-class torchvision Faster R-CNN, with weights only from local files."""
    from torchvision.models import detection
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    if config.name not in DETECTORS:
        raise UsageError(f"detector {config.name!r} is not a trainable detector ({', '.join(DETECTORS)})")
    builder = getattr(detection, config.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torchvision warns that untrained backbones train all layers
        detector = builder(weights=None, weights_backbone=None, num_classes=2, min_size=config.min_size,
                           max_size=config.max_size, box_score_thresh=config.score_thresh,
                           box_detections_per_img=config.detections_per_img,
                           rpn_pre_nms_top_n_train=2 * config.proposals, rpn_post_nms_top_n_train=config.proposals,
                           rpn_pre_nms_top_n_test=config.proposals, rpn_post_nms_top_n_test=config.proposals // 2 or 1)
    if config.representation_size != detector.roi_heads.box_predictor.cls_score.in_features:
        resolution = detector.roi_heads.box_roi_pool.output_size[0]
        channels = detector.backbone.out_channels
        detector.roi_heads.box_head = TwoMLPHead(channels * resolution**2, config.representation_size)
        detector.roi_heads.box_predictor = FastRCNNPredictor(config.representation_size, 2)
    if config.weights_backbone:
        _load_backbone(detector, config.weights_backbone)
    if config.weights:
        skipped = load_detector_weights(detector, config.weights)
        if skipped:
            echo(f"detector weights {config.weights}: {len(skipped)} tensors of another shape left new "
                 f"(e.g. {skipped[0]})")
    return detector


def _read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise PersonvlError(f"detector weights {path}: not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise PersonvlError(f"{path} does not hold a state dict")
    return state


def load_detector_weights(detector: nn.Module, path: str | os.PathLike) -> list[str]:
    """Strict by name; tensors whose shape differs (another class count or box-head width) are
    left as built and returned."""
    state = _read_state(path)
    own = detector.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise PersonvlError(f"{path} is not a {type(detector).__name__} of this kind: missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}")
    skipped = [k for k in own if state[k].shape != own[k].shape]
    detector.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped


def _load_backbone(detector: nn.Module, path: str | os.PathLike) -> None:
    """An ImageNet classifier's state dict (torchvision names) into the detector's trunk."""
    state = _read_state(path)
    body = detector.backbone.body
    own = body.state_dict()
    renamed = {}
    for key, value in state.items():
        name = key.removeprefix("features.")      # MobileNet keeps its trunk under features.
        if name in own:
            renamed[name] = value
    missing = [k for k in own if k not in renamed]
    if missing:
        raise PersonvlError(f"backbone weights {path} lack {len(missing)} trunk tensors, e.g. {missing[0]}")
    body.load_state_dict(renamed)


def save_detector(detector: nn.Module, config: DetectorConfig, directory: Path) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in detector.state_dict().items()}
    save_file(state, str(directory / DETECTOR_WEIGHTS_FILE))
    described = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("weights", "weights_backbone", "train")}
    (directory / DETECTOR_CONFIG_FILE).write_text(json.dumps(described, indent=1) + "\n", encoding="utf-8")


def load_detector(directory: str | os.PathLike) -> nn.Module:
    """The detector a search run saved beside its encoder (``model/``)."""
    directory = Path(directory)
    described = json.loads((directory / DETECTOR_CONFIG_FILE).read_text(encoding="utf-8"))
    config = DetectorConfig(**described, weights=str(directory / DETECTOR_WEIGHTS_FILE), train=False)
    return build_detector(config).eval()


class DetectorMethod(nn.Module):
    """The detector's own losses (RPN and box head), summed."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, batch: dict[str, Any], progress: float = 0.0, step: int = 0) -> dict[str, torch.Tensor]:
        losses = self.detector(batch["images"], batch["targets"])
        return {"loss": sum(losses.values()), **losses}

    def parameter_groups(self) -> list[dict]:
        return [{"name": "detector", "params": list(self.detector.parameters())}]


class SceneBoxes(Dataset):
    """Training frames as (image tensor in [0, 1], {"boxes", "labels"}) with an optional flip."""

    def __init__(self, records, flip: bool):
        self.records = [r for r in records if r.boxes is not None]
        self.flip = flip

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        from torchvision.transforms.functional import to_tensor

        record = self.records[index]
        with Image.open(record.image_path) as image:
            pixels = to_tensor(image.convert("RGB"))
        boxes = torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4)
        if self.flip and torch.rand(()) < 0.5:
            pixels = pixels.flip(-1)
            width = pixels.shape[-1]
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        return pixels, {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64)}


def collate_scenes(items):
    return {"images": [image for image, _ in items], "targets": [target for _, target in items]}


# ----------------------------------------------------------------------------- re-ID on crops


def crop(image: Image.Image, box: Sequence[float]) -> Image.Image:
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, y1 = max(0.0, x1), max(0.0, y1)
    x2, y2 = min(float(image.width), max(x2, x1 + 1)), min(float(image.height), max(y2, y1 + 1))
    return image.crop((int(x1), int(y1), max(int(x1) + 1, int(round(x2))), max(int(y1) + 1, int(round(y2)))))


class PersonCrops(Dataset):
    """Labelled person boxes of training frames, cropped (with box jitter) and transformed."""

    def __init__(self, items: Sequence[tuple[str, tuple[float, ...], int]], transform, jitter: float):
        self.items, self.transform, self.jitter = list(items), transform, jitter

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from personvl.models.transforms import open_rgb_image

        path, box, label = self.items[index]
        x1, y1, x2, y2 = box
        if self.jitter > 0:
            shift = (torch.rand(4) * 2 - 1) * self.jitter
            w, h = x2 - x1, y2 - y1
            x1, y1, x2, y2 = x1 + shift[0] * w, y1 + shift[1] * h, x2 + shift[2] * w, y2 + shift[3] * h
        return {"images": self.transform(crop(open_rgb_image(path), (x1, y1, x2, y2))),
                "pids": torch.tensor(label)}


class ReidMethod(nn.Module):
    """Identity classification (BNNeck-style, on the encoder's image embedding) plus a
    batch-hard triplet loss on the embedding."""

    def __init__(self, encoder, num_identities: int, config: ReidConfig):
        super().__init__()
        self.encoder = encoder
        self.config = config
        encoder.text.requires_grad_(False)
        self.neck = nn.BatchNorm1d(encoder.embed_dim)
        self.neck.bias.requires_grad_(False)
        self.classifier = nn.Linear(encoder.embed_dim, num_identities, bias=False)

    def forward(self, batch: dict[str, torch.Tensor], progress: float = 0.0, step: int = 0) -> dict[str, torch.Tensor]:
        from personvl.objectives.classification import batch_hard_triplet_loss, id_loss

        embedding = self.encoder.visual(batch["images"])
        identity = id_loss(self.classifier(self.neck(embedding)), batch["pids"])
        triplet = batch_hard_triplet_loss(embedding, batch["pids"], margin=self.config.triplet_margin)
        total = self.config.id_weight * identity + self.config.triplet_weight * triplet
        return {"loss": total, "id": identity, "triplet": triplet}

    def parameter_groups(self) -> list[dict]:
        return [{"name": "image_tower", "params": list(self.encoder.visual.parameters())},
                {"name": "identity_head", "params": [*self.neck.parameters(), *self.classifier.parameters()]}]


class _Loaders(pl.LightningDataModule):
    def __init__(self, make):
        super().__init__()
        self.make = make

    def train_dataloader(self):
        return self.make(self.trainer)


def _labelled_crops(records) -> tuple[list[tuple[str, tuple[float, ...], int]], dict[int, int]]:
    items, labels = [], {}
    for record in records:
        for box, pid in zip(record.boxes or [], record.box_pids or []):
            if pid > 0:
                items.append((record.image_path, tuple(box), labels.setdefault(pid, len(labels))))
    return items, labels


# ----------------------------------------------------------------------------- evaluation


def _scene_name(path: str) -> str:
    return os.path.basename(path)


def _embed_crops(encoder, items: Sequence[tuple[str, Sequence[float]]], batch_size: int) -> np.ndarray:
    """L2-normalised embeddings of (frame path, box) crops, opening each frame once."""
    from personvl.models.transforms import open_rgb_image

    features = np.zeros((len(items), encoder.embed_dim), dtype=np.float32)
    order = sorted(range(len(items)), key=lambda i: items[i][0])
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode():
            frame_path, frame = None, None
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                pixels = []
                for i in chunk:
                    if items[i][0] != frame_path:
                        frame_path, frame = items[i][0], open_rgb_image(items[i][0])
                    pixels.append(encoder.image_transform(crop(frame, items[i][1])))
                features[chunk] = encoder.encode_image(torch.stack(pixels)).float().cpu().numpy()
    finally:
        encoder.train(was_training)
    return features


def detect(detector: nn.Module, paths: Sequence[str], *, min_score: float = 0.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(boxes x1 y1 x2 y2, scores) per frame, keeping detections scoring at least ``min_score``."""
    from torchvision.transforms.functional import to_tensor

    device = next(detector.parameters()).device
    was_training = detector.training
    detector.eval()
    found = []
    try:
        with torch.inference_mode():
            for path in paths:
                with Image.open(path) as image:
                    output = detector([to_tensor(image.convert("RGB")).to(device)])[0]
                keep = output["scores"] >= min_score
                found.append((output["boxes"][keep].cpu().numpy().astype(np.float64),
                              output["scores"][keep].cpu().numpy().astype(np.float64)))
    finally:
        detector.train(was_training)
    return found


@dataclass
class SearchInputs:
    """The test side of a search set: queries, gallery scenes and where their frames are."""

    queries: list            # personvl.evaluation.SearchQuery
    scenes: list             # personvl.evaluation.Scene
    frame_paths: dict[str, str]
    query_items: list[tuple[str, tuple[float, ...]]]


def search_inputs(query_records, gallery_records) -> SearchInputs:
    from personvl.evaluation import Scene, SearchQuery

    scenes, frame_paths = [], {}
    for record in gallery_records:
        name = _scene_name(record.image_path)
        scenes.append(Scene(name, np.asarray(record.boxes or [], dtype=np.float64).reshape(-1, 4),
                            np.asarray(record.box_pids or [], dtype=np.int64), record.camid))
        frame_paths[name] = record.image_path
    queries, query_items = [], []
    for record in query_records:
        frame = record.extra.get("frame_path", record.image_path)
        if record.scene_box is None:
            raise UsageError(f"query {record.image_path} has no box in its frame")
        gallery = record.extra.get("gallery")
        queries.append(SearchQuery(_scene_name(frame), int(record.pid), record.camid,
                                   tuple(gallery) if gallery is not None else None))
        query_items.append((frame, tuple(record.scene_box)))
    return SearchInputs(queries, scenes, frame_paths, query_items)


def search_metrics(encoder, detector: nn.Module | None, inputs: SearchInputs, *, det_thresh: float = 0.5,
                   iou_thresh: float = 0.5, exclude_same_camera: bool = False, batch_size: int = 64,
                   query_features: np.ndarray | None = None) -> tuple[dict[str, Any], dict]:
    """Person-search metrics, and the detections (name -> SceneDetections) they came from.
    ``detector=None`` takes the ground-truth boxes as detections (score 1)."""
    from personvl.evaluation import SceneDetections, person_search_metrics

    names = [scene.name for scene in inputs.scenes]
    if detector is None:
        found = [(scene.boxes, np.ones(len(scene.boxes))) for scene in inputs.scenes]
    else:
        found = detect(detector, [inputs.frame_paths[n] for n in names], min_score=det_thresh)
    items = [(inputs.frame_paths[n], box) for n, (boxes, _) in zip(names, found) for box in boxes]
    features = _embed_crops(encoder, items, batch_size) if items else np.zeros((0, encoder.embed_dim), np.float32)
    detections, offset = {}, 0
    for name, (boxes, scores) in zip(names, found):
        detections[name] = SceneDetections(boxes, scores, features[offset:offset + len(boxes)])
        offset += len(boxes)
    if query_features is None:
        query_features = _embed_crops(encoder, inputs.query_items, batch_size)
    if not items:
        warnings.warn(f"the detector found nobody scoring at least {det_thresh} in any gallery frame")
        metrics = {"mAP": 0.0, "top1": 0.0, "R5": 0.0, "R10": 0.0, "detection_AP": 0.0, "detection_recall": 0.0,
                   "valid_queries": len(inputs.queries), "queries": len(inputs.queries)}
    else:
        metrics = person_search_metrics(query_features, inputs.queries, inputs.scenes, detections, det_thresh,
                                        iou_thresh, exclude_same_camera)
    return metrics, {"detections": detections, "query_features": query_features}


def plot_search_results(inputs: SearchInputs, results: dict, path: str | os.PathLike, *, queries: int = 4,
                        top: int = 5, iou_thresh: float = 0.5) -> Path | None:
    """Each query crop followed by its most similar detections in other frames, framed green
    where the detection is the query's person."""
    from personvl.evaluation import plot_reid_grid
    from personvl.evaluation.person_search import box_iou, small_box_iou_threshold
    from personvl.models.transforms import open_rgb_image

    owners, boxes, features = [], [], []
    for scene_index, scene in enumerate(inputs.scenes):
        found = results["detections"][scene.name]
        owners += [scene_index] * len(found.boxes)
        boxes += list(np.asarray(found.boxes).reshape(-1, 4))
        features.append(np.asarray(found.features))
    if not boxes or queries <= 0:
        return None
    gallery = np.concatenate(features)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True).clip(1e-12)
    shown = list(range(min(queries, len(inputs.queries))))
    top = min(top, len(boxes))
    ranked, correct, needed = [], [], {}
    for q in shown:
        query = inputs.queries[q]
        similarity = gallery @ results["query_features"][q]
        allowed = np.array([inputs.scenes[o].name != query.scene and
                            (query.gallery is None or inputs.scenes[o].name in query.gallery) for o in owners])
        similarity = np.where(allowed, similarity, -np.inf)
        order = np.argsort(-similarity, kind="stable")[:top]
        row, hits = [], []
        for d in order:
            scene = inputs.scenes[owners[d]]
            truth = scene.boxes[scene.pids == query.pid]
            hit = bool(len(truth)) and float(box_iou(truth[:1], boxes[d][None])[0, 0]) >= small_box_iou_threshold(truth[0], iou_thresh)
            row.append(needed.setdefault(int(d), len(needed)))
            hits.append(hit)
        ranked.append(row)
        correct.append(hits)
    frames: dict[str, Image.Image] = {}

    def picture(frame_path: str, box) -> Image.Image:
        if frame_path not in frames:
            frames[frame_path] = open_rgb_image(frame_path)
        return crop(frames[frame_path], box)

    detections = sorted(needed, key=needed.get)
    gallery_images = [picture(inputs.frame_paths[inputs.scenes[owners[d]].name], boxes[d]) for d in detections]
    query_images = [picture(*inputs.query_items[q]) for q in shown]
    return plot_reid_grid(query_images, gallery_images, np.array(ranked), np.array(correct), path)


# ----------------------------------------------------------------------------- the recipe


def _train_detector(config: SearchConfig, train_records, out: Path, resume: bool, echo) -> nn.Module:
    detector = build_detector(config.detector, echo).train()
    if not config.detector.train or config.trainer.max_steps <= 0:
        return detector
    run = out / DETECTOR_RUN
    checkpoint = latest_checkpoint(run)
    dataset = SceneBoxes(train_records, config.detector.flip)
    if not len(dataset):
        raise PersonvlError(f"{config.data.dataset} {config.data.train_split} has no frames with person boxes")

    def loader(trainer):
        sampler = EpochShuffleSampler(len(dataset), config.trainer.seed, trainer.global_rank, trainer.world_size)
        batches = BatchSampler(sampler, min(config.detector.batch_size, len(sampler)), drop_last=True)
        return ResumableDataLoader(dataset, batches, num_workers=config.data.workers, collate_fn=collate_scenes,
                                   persistent_workers=config.data.workers > 0)

    task = TrainingTask(DetectorMethod(detector), config.optim, config.trainer.max_steps,
                        config.trainer.max_nonfinite_in_row, seed=config.trainer.seed)
    trainer = build_trainer(config.trainer, run)
    echo(f"training the {config.detector.name} detector on {len(dataset)} {config.data.dataset} frames "
         f"for {config.trainer.max_steps} steps -> {run}")
    trainer.fit(task, datamodule=_Loaders(loader), ckpt_path=checkpoint if resume else None)
    return detector


def _train_reid(config: SearchConfig, encoder, train_records, out: Path, resume: bool, echo) -> int:
    from personvl.data.samplers import IdentitySampler
    from personvl.data.transforms import build_transform

    reid = config.reid
    items, labels = _labelled_crops(train_records)
    if len(labels) < 2:
        raise PersonvlError(f"re-ID fine-tuning needs at least two identities in the training frames, found {len(labels)}")
    preprocess = encoder.config.preprocess
    transform = build_transform("plip", train=True, height=preprocess.input_size[0], width=preprocess.input_size[1],
                                mean=tuple(preprocess.mean), std=tuple(preprocess.std))
    dataset = PersonCrops(items, transform, reid.box_jitter)
    identities = min(reid.identities_per_batch, len(labels))

    def loader(trainer):
        sampler = IdentitySampler([label for _, _, label in items], identities, reid.images_per_identity,
                                  seed=config.trainer.seed)
        batches = BatchSampler(sampler, identities * reid.images_per_identity, drop_last=True)
        return ResumableDataLoader(dataset, batches, num_workers=config.data.workers,
                                   persistent_workers=config.data.workers > 0)

    method = ReidMethod(encoder.train(), len(labels), reid)
    optim = dataclasses.replace(config.optim, lr=reid.lr)
    task = TrainingTask(method, optim, reid.max_steps, config.trainer.max_nonfinite_in_row, seed=config.trainer.seed)
    run = out / REID_RUN
    trainer = build_trainer(dataclasses.replace(config.trainer, max_steps=reid.max_steps), run)
    echo(f"fine-tuning the re-ID encoder on {len(items)} crops of {len(labels)} identities for {reid.max_steps} steps -> {run}")
    trainer.fit(task, datamodule=_Loaders(loader), ckpt_path=latest_checkpoint(run) if resume else None)
    return len(labels)


def finetune(config: SearchConfig | str | os.PathLike, overrides: Sequence[str] = (), *, resume: bool = False,
             echo=print) -> dict[str, Any]:
    """Train the detector (unless ``detector.name: gt``) and optionally the re-ID encoder on
    the training frames, then evaluate person search on the query and gallery splits."""
    from personvl.data import load_dataset
    from personvl.evaluation import write_report
    from personvl.models import open_model, save_model

    if not isinstance(config, SearchConfig):
        config = load_search_config(config, overrides)
    started = time.perf_counter()
    out = Path(config.output_dir)
    if (out / "config.yaml").exists() and not resume and any(
            latest_checkpoint(out / run) for run in (DETECTOR_RUN, REID_RUN)):
        raise PersonvlError(f"{out} already holds a run; pass --resume to continue it or choose another output_dir")
    save_config(config, out)
    data = config.data
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    train = load_dataset(data.dataset, data.root, data.train_split, skip_missing=data.skip_missing)

    encoder = open_model(config.model.name, config.model.weights, tokenizer=config.model.tokenizer,
                         **config.model.options)
    summary: dict[str, Any] = {"task": "search", "dataset": data.dataset, "model": config.model.name,
                               "weights": config.model.weights, "detector": config.detector.name,
                               "selection": "last step (no validation split)"}
    if config.reid.max_steps > 0:
        summary["reid_identities"] = _train_reid(config, encoder, train, out, resume, echo)
        summary["reid_steps"] = config.reid.max_steps
    encoder.eval()
    detector = None
    if config.detector.name != GROUND_TRUTH:
        detector = _train_detector(config, train, out, resume, echo).eval()
        summary["detector_steps"] = config.trainer.max_steps if config.detector.train else 0
    model_dir = save_model(encoder, out / MODEL_DIR)
    if detector is not None:
        save_detector(detector, config.detector, model_dir)

    # The test frames and queries are read here, after training, for the first time.
    query = load_dataset(data.dataset, data.root, data.query_split, skip_missing=data.skip_missing)
    gallery = load_dataset(data.dataset, data.root, data.gallery_split, skip_missing=data.skip_missing)
    inputs = search_inputs(query, gallery)
    evaluation = config.evaluation
    metrics, results = search_metrics(encoder, detector, inputs, det_thresh=evaluation.det_thresh,
                                      iou_thresh=evaluation.iou_thresh, exclude_same_camera=evaluation.exclude_same_camera,
                                      batch_size=evaluation.batch_size)
    metrics["detector"] = config.detector.name
    write_report(metrics, out, name=out.name, task="search")
    plots = []
    if evaluation.plot_queries:
        plot = plot_search_results(inputs, results, out / PLOTS_DIR / "search_results.png",
                                   queries=evaluation.plot_queries, iou_thresh=evaluation.iou_thresh)
        plots = [str(plot)] if plot is not None else []
    summary.update(model_dir=str(model_dir), metrics={k: metrics[k] for k in ("mAP", "top1", "detection_AP",
                                                                              "detection_recall")},
                   plots=plots, seconds=round(time.perf_counter() - started, 2))
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def evaluate(model, dataset: str, root: str | os.PathLike, *, split: str = "test",
             detector: nn.Module | str | os.PathLike | None = None, det_thresh: float = 0.5, iou_thresh: float = 0.5,
             exclude_same_camera: bool = False, batch_size: int = 64, plots_dir: str | os.PathLike | None = None,
             skip_missing: bool = False, **options: Any) -> dict[str, Any]:
    """Person-search ``mAP``, ``top1``, ``R5``, ``R10``, ``detection_AP``, ``detection_recall``
    (percent) of a re-ID encoder (a model folder, registered name or encoder) on a set's
    query and gallery splits (``split="test"``).

    ``detector``: ``"gt"`` (ground-truth boxes: re-ID quality alone), a folder holding a
    saved detector, a detector module, or None for the detector saved beside the encoder by
    ``finetune``. ``metrics["detector"]`` says which was used. ``options`` go to the
    dataset reader (``protocol="TestG50"`` for CUHK-SYSU).
    """
    from personvl.data import load_dataset
    from personvl.models import open_model

    if split != "test":
        raise UsageError(f"person search is evaluated on the query and gallery splits (split='test'), got {split!r}")
    model_dir = Path(model) if isinstance(model, (str, os.PathLike)) and Path(model).is_dir() else None
    encoder = open_model(model) if isinstance(model, (str, os.PathLike)) else model
    used = GROUND_TRUTH
    if detector is None:
        if model_dir is None or not (model_dir / DETECTOR_CONFIG_FILE).is_file():
            raise UsageError("no detector: pass detector='gt' (ground-truth boxes) or a folder holding "
                             f"{DETECTOR_WEIGHTS_FILE} and {DETECTOR_CONFIG_FILE}")
        detector = model_dir
    if isinstance(detector, str) and detector == GROUND_TRUTH:
        detector = None
    elif isinstance(detector, (str, os.PathLike)):
        used = f"{json.loads((Path(detector) / DETECTOR_CONFIG_FILE).read_text())['name']} ({detector})"
        detector = load_detector(detector)
    else:
        used = type(detector).__name__
    query = load_dataset(dataset, root, "query", skip_missing=skip_missing, **options)
    gallery = load_dataset(dataset, root, "gallery", skip_missing=skip_missing, **options)
    inputs = search_inputs(query, gallery)
    metrics, results = search_metrics(encoder, detector, inputs, det_thresh=det_thresh, iou_thresh=iou_thresh,
                                      exclude_same_camera=exclude_same_camera, batch_size=batch_size)
    metrics["detector"] = used
    if plots_dir is not None:
        plot_search_results(inputs, results, Path(plots_dir) / "search_results.png", iou_thresh=iou_thresh)
    return metrics
