"""Person search (PRW, CUHK-SYSU), two-stage: a person detector on whole scene frames, then the
re-ID encoder on the detected crops, scored with the CUHK-SYSU / PRW protocol.

The re-ID encoder is any model folder or registered name (``model``); the run's own training
(``optim``, ``trainer.max_steps`` > 0, ``loss``) fine-tunes it first on the labelled training
crops (identity loss + batch-hard triplet, P x K batches), as the re-ID task does.

The detector is torchvision's Faster R-CNN (``fasterrcnn_mobilenet_v3_large_fpn`` or
``fasterrcnn_resnet50_fpn``) with one person class. It is built without downloading anything:
``detector.weights`` loads a whole detector (torchvision's COCO file, or a previous run's
``model/heads/search.safetensors``; parts whose shapes differ, such as COCO's 91-class
predictor, are left new and reported), ``detector.weights_backbone`` an ImageNet backbone.
``detector.max_steps`` fine-tunes it on the person boxes of the training frames with its own
optimiser (``detector.optim``). ``detector.name: gt`` uses the ground-truth boxes instead,
which measures the re-ID part alone. Queries are the protocol's query boxes cropped from their
frames.

Neither set has a validation split, so the weights of the last step are kept: the test frames
and queries are read only for the final evaluation. Outputs under ``output_dir``: the resolved
``config.yaml``, checkpoints and logs (the re-ID stage's in the run folder, the detector's in
``detector/``), ``model/`` (the encoder's folder, with the detector as
``heads/search.safetensors`` and ``heads/search.json``), ``metrics.json``,
``plots/search_results.png`` and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from personvl.errors import PersonvlError, UsageError
from personvl.tasks.reid import ReidLosses, strong_baseline_optim
from personvl.tasks.runner import EvaluationTarget, Stage, Task, TaskData, Trained, task_config
from personvl.training.optim import OptimConfig
from personvl.training.pretrain import ModelSpec
from personvl.training.trainer import TrainerConfig

DETECTOR_RUN = "detector"
PLOTS_DIR = "plots"
GROUND_TRUTH = "gt"
DETECTORS = ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn")
# CUHK-SYSU's test protocols: each query's gallery holds this many frames (TestG50 ... TestG4000).
CUHK_SYSU_GALLERY_SIZES = (50, 100, 500, 1000, 2000, 4000)


@dataclass
class SearchData(TaskData):
    dataset: str = "prw"
    val_split: str | None = "auto"     # PRW and CUHK-SYSU have none: the last step is kept
    identities_per_batch: int = 8      # P x K batches of labelled training crops (the re-ID stage)
    images_per_identity: int = 2
    box_jitter: float = 0.05           # random shift of each training crop's box, in box sizes
    transform: str = "plip"


@dataclass
class DetectorOptim(OptimConfig):
    name: str = "sgd"                  # torchvision's detection recipes
    lr: float = 0.01
    weight_decay: float = 1e-4
    warmup_steps: int = 100


@dataclass
class DetectorConfig:
    name: str = "fasterrcnn_mobilenet_v3_large_fpn"   # or fasterrcnn_resnet50_fpn, or gt (ground-truth boxes)
    weights: str | None = None            # a whole detector's state dict (.pth / .safetensors)
    weights_backbone: str | None = None   # an ImageNet backbone state dict
    max_steps: int = 1000                 # fine-tuning on the training frames' person boxes (0: as loaded)
    optim: DetectorOptim = field(default_factory=DetectorOptim)
    batch_size: int = 2
    min_size: int = 800                   # frames are resized so the short side is min_size ...
    max_size: int = 1333                  # ... and the long side at most max_size
    representation_size: int = 1024       # the box head's width
    proposals: int = 1000                 # region proposals kept per frame after NMS (training)
    score_thresh: float = 0.05
    detections_per_img: int = 100
    flip: bool = True

    def __post_init__(self) -> None:
        if self.name not in (*DETECTORS, GROUND_TRUTH):
            raise UsageError(f"detector.name must be one of {', '.join((*DETECTORS, GROUND_TRUTH))}, got {self.name!r}")

    def architecture(self) -> dict[str, Any]:
        """What rebuilds the detector (saved beside its weights)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("weights", "weights_backbone", "max_steps", "optim")}


@dataclass
class SearchEvaluation(EvaluationTarget):
    det_thresh: float = 0.5
    iou_thresh: float = 0.5
    exclude_same_camera: bool = False
    gallery_size: int | None = None       # CUHK-SYSU: 50, 100 (its default), 500, 1000, 2000 or 4000
    plot_queries: int = 4                 # queries drawn in plots/search_results.png (0: none)

    def __post_init__(self) -> None:
        if self.gallery_size is not None:
            if self.gallery_size not in CUHK_SYSU_GALLERY_SIZES:
                raise UsageError(f"evaluation.gallery_size must be one of "
                                 f"{', '.join(map(str, CUHK_SYSU_GALLERY_SIZES))}, got {self.gallery_size}")
            self.options = {**self.options, "protocol": f"TestG{self.gallery_size}"}


# The re-ID stage is the encoder's fine-tuning (optim, trainer, loss; trainer.max_steps 0 uses
# the encoder as given); the detector has its own section.
SearchConfig = task_config("SearchConfig", __name__, output_dir="runs/search", data=SearchData,
                           optim=strong_baseline_optim, trainer=lambda: TrainerConfig(max_steps=0),
                           evaluation=SearchEvaluation, loss=ReidLosses, detector=DetectorConfig)


def load_search_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> SearchConfig:
    from personvl.config import load_config

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
    detector.architecture = config.architecture()
    detector.described = config.name if not config.weights else f"{config.name} ({config.weights})"
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


def load_detector(directory: str | os.PathLike) -> nn.Module:
    """The detector saved in a model folder (a search run's ``model/``)."""
    from personvl.tasks.heads import head_files, load_state_exactly, read_head

    found = read_head(directory, TASK.name)
    if found is None:
        raise UsageError(f"{directory} holds no detector (heads/search.json)")
    settings, weights = found
    return load_state_exactly(TASK.build_head(settings, None), weights, str(head_files(directory, TASK.name)[0])).eval()


class DetectorMethod(nn.Module):
    """The detector's own losses (RPN and box head), summed."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    @property
    def head(self) -> nn.Module:
        return self.detector

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
        return {"image": self.transform(crop(open_rgb_image(path), (x1, y1, x2, y2))),
                "pid": torch.tensor(label)}


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


# ----------------------------------------------------------------------------- the task


class SearchTask(Task):
    """Two stages: the re-ID encoder on the training frames' labelled crops, then the
    detector on their boxes; the detector is the head."""

    name = "search"
    config_type = SearchConfig
    metric = "mAP"
    reported = ("mAP", "top1", "detection_AP", "detection_recall")
    stage_folders = (DETECTOR_RUN,)

    def test_splits(self, dataset: str, root: str, options: dict[str, Any]) -> set[str]:
        return {"query", "gallery"}

    def inputs(self, records):
        raise UsageError("person search is scored on a set's query and gallery splits only: it has no validation "
                         "from training frames (leave data.val_split auto and data.holdout_fraction 0)")

    def read_inputs(self, dataset: str, root: str, split: str, options: dict[str, Any], skip_missing: bool = False):
        from personvl.data import load_dataset

        if split != "test":
            raise UsageError(f"person search is evaluated on the query and gallery splits (split='test'), got {split!r}")
        return search_inputs(load_dataset(dataset, root, "query", skip_missing=skip_missing, **options),
                             load_dataset(dataset, root, "gallery", skip_missing=skip_missing, **options))

    def stages(self, config: SearchConfig, encoder, train, echo) -> list[Stage]:
        from personvl.data.samplers import ShuffledBatches
        from personvl.tasks.finetuning import identity_batches, model_transform
        from personvl.tasks.reid import ReidMethod

        stages = []
        if config.trainer.max_steps > 0:
            items, labels = _labelled_crops(train)
            if len(labels) < 2:
                raise PersonvlError(f"re-ID fine-tuning needs at least two identities in the training frames, "
                                    f"found {len(labels)}")
            dataset = PersonCrops(items, model_transform(encoder, config.data.transform, train=True),
                                  config.data.box_jitter)
            pids = [label for _, _, label in items]
            stages.append(Stage("", ReidMethod(encoder, len(labels), config.loss), dataset,
                                lambda rank, world: identity_batches(pids, config.data, config.trainer.seed, rank, world),
                                config.optim, config.trainer.max_steps,
                                describe=f"fine-tuning the re-ID encoder on {len(items)} crops of {len(labels)} "
                                         f"identities for {config.trainer.max_steps} steps"))
        if config.detector.name != GROUND_TRUTH:
            with torch.random.fork_rng():
                # Its own seed: the detector starts the same whatever was built or drawn before it.
                torch.manual_seed(config.trainer.seed)
                detector = build_detector(config.detector, echo).train()
            frames = SceneBoxes(train, config.detector.flip)
            if config.detector.max_steps > 0 and not len(frames):
                raise PersonvlError(f"{config.data.dataset} {config.data.train_split} has no frames with person boxes")
            size, batch, seed = len(frames), config.detector.batch_size, config.trainer.seed
            stages.append(Stage(DETECTOR_RUN, DetectorMethod(detector), frames,
                                lambda rank, world: ShuffledBatches(size, batch, seed=seed, rank=rank, world_size=world),
                                config.detector.optim, config.detector.max_steps, collate=collate_scenes,
                                selected=False,
                                describe=f"training the {config.detector.name} detector on {size} "
                                         f"{config.data.dataset} frames for {config.detector.max_steps} steps"))
        return stages

    def trained(self, encoder, stages: list[Stage]) -> Trained:
        detectors = [stage.method.detector for stage in stages if stage.name == DETECTOR_RUN]
        return Trained(encoder, detectors[0] if detectors else None)

    def score(self, model: Trained, inputs: "SearchInputs", settings: SearchEvaluation,
              plots_dir: Path | None = None) -> dict[str, Any]:
        metrics, results = search_metrics(model.encoder, model.head, inputs, det_thresh=settings.det_thresh,
                                          iou_thresh=settings.iou_thresh,
                                          exclude_same_camera=settings.exclude_same_camera,
                                          batch_size=settings.batch_size)
        metrics["detector"] = getattr(model.head, "described", type(model.head).__name__) if model.head is not None \
            else "gt (ground-truth boxes)"
        queries = getattr(settings, "plot_queries", 0)
        if plots_dir is not None and queries:
            plot = plot_search_results(inputs, results, Path(plots_dir) / PLOTS_DIR / "search_results.png",
                                       queries=queries, iou_thresh=settings.iou_thresh)
            metrics["plots"] = [str(plot)] if plot is not None else []
        return metrics

    def head_settings(self, head: nn.Module) -> dict[str, Any]:
        return {"kind": "detector", **head.architecture}

    def build_head(self, settings: dict[str, Any], encoder) -> nn.Module:
        described = {k: v for k, v in settings.items() if k not in ("task", "kind")}
        return build_detector(DetectorConfig(**described, max_steps=0))


TASK = SearchTask()


def finetune(config: SearchConfig | str | os.PathLike, overrides: Sequence[str] = (), *, resume: bool = False,
             echo=print) -> dict[str, Any]:
    """Fine-tune the re-ID encoder on the training frames' labelled crops (``trainer.max_steps``)
    and train the detector (``detector.max_steps``, unless ``detector.name: gt``), then evaluate
    person search on the query and gallery splits."""
    from personvl.tasks.runner import run

    return run(TASK, config, overrides, resume=resume, echo=echo)


def evaluate(model, dataset: str, root: str | os.PathLike, *, split: str = "test",
             detector: nn.Module | str | os.PathLike | None = None, det_thresh: float = 0.5, iou_thresh: float = 0.5,
             exclude_same_camera: bool = False, batch_size: int = 64, gallery_size: int | None = None,
             plots_dir: str | os.PathLike | None = None, skip_missing: bool = False, **options: Any) -> dict[str, Any]:
    """Person-search ``mAP``, ``top1``, ``R5``, ``R10``, ``detection_AP``, ``detection_recall``
    (percent) of a re-ID encoder (a model folder, registered name or encoder) on a set's
    query and gallery splits (``split="test"``).

    ``detector``: ``"gt"`` (ground-truth boxes: re-ID quality alone), a model folder holding a
    detector, a detector module, or None for the detector saved in ``model``'s folder.
    ``metrics["detector"]`` says which was used. ``gallery_size``: CUHK-SYSU's protocol
    (50 ... 4000 frames per query); ``options`` go to the dataset reader.
    """
    from personvl.tasks.runner import evaluate_saved, open_encoder

    if split != "test":
        raise UsageError(f"person search is evaluated on the query and gallery splits (split='test'), got {split!r}")
    folder = Path(model) if isinstance(model, (str, os.PathLike)) and Path(model).is_dir() else None
    if isinstance(model, Trained):
        trained = model
    elif folder is not None:
        trained = TASK.load(folder)
    else:
        trained = Trained(open_encoder(ModelSpec(str(model))) if isinstance(model, (str, os.PathLike)) else model)
    if isinstance(detector, str) and detector == GROUND_TRUTH:
        trained = Trained(trained.encoder)
    elif isinstance(detector, (str, os.PathLike)):
        trained = Trained(trained.encoder, load_detector(detector))
    elif detector is not None:
        trained = Trained(trained.encoder, detector)
    elif trained.head is None:
        raise UsageError("no detector: pass detector='gt' (ground-truth boxes) or a model folder holding one "
                         "(heads/search.json)")
    settings = SearchEvaluation(det_thresh=det_thresh, iou_thresh=iou_thresh, exclude_same_camera=exclude_same_camera,
                                batch_size=batch_size, gallery_size=gallery_size, plot_queries=4 if plots_dir else 0)
    return evaluate_saved(TASK, trained, dataset, root, split=split, settings=settings,
                          plots_dir=plots_dir,
                          dataset_options={**options, **settings.options}, skip_missing=skip_missing)
