"""Person search: detection plus identification over whole gallery scenes (CUHK-SYSU and PRW).

For each query (a person box in a query frame, given as its feature) the gallery is a set of
frames: the protocol's list for CUHK-SYSU (100 frames per query in the usual setting), every
other frame for PRW (optionally only other cameras). Each frame contributes its detections
scoring at least ``det_thresh``, ranked by cosine similarity to the query. In a frame showing
the query's identity, the most similar detection whose IoU with the ground-truth box reaches
``min(iou_thresh, w h / ((w + 10) (h + 10)))`` (the small-box rule) is the one true positive.

- ``mAP``: per query, the average precision over the ranked detections times the recall rate
  (true positives / frames showing the identity), as the reference code scales it; a query
  without any true positive scores 0.
- ``top1`` (and ``R5``, ``R10``): a true positive within the first k detections.
- ``detection_AP`` / ``detection_recall``: the detections of all frames in ``scenes`` against
  their ground-truth boxes at IoU ``iou_thresh``, each box and detection matched at most once
  (largest IoU), AP scaled by the recall as in the reference code.

Ties in similarity or detection score are ordered by position (frame order, then detection
order), the library's one tie rule; on tie-free scores this equals the reference code's
``average_precision_score``. Queries whose identity appears in no gallery frame are skipped
with a warning (``valid_queries`` counts the others).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from personvl.errors import UsageError
from personvl.evaluation.inputs import (DEFAULT_MEMORY_BUDGET, as_features, check_memory_budget, one_cpu_thread,
                                        resolve_device, rows_per_chunk)
from personvl.evaluation.ranking import BYTES_PER_ITEM, MAX_ROWS_PER_CHUNK, NoMatchWarning, rank_targets


@dataclass(frozen=True)
class Scene:
    """Ground truth of one gallery frame: person boxes (x1, y1, x2, y2) and identities
    (negative = an unlabelled person), and the camera where the protocol uses it."""

    name: str
    boxes: np.ndarray
    pids: np.ndarray
    camid: int | None = None

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        pids = np.asarray(self.pids).reshape(-1)
        if pids.dtype.kind not in "iu":
            raise UsageError(f"scene {self.name!r}: pids must be integers, got dtype {pids.dtype}")
        if boxes.shape[0] != pids.shape[0]:
            raise UsageError(f"scene {self.name!r}: {boxes.shape[0]} boxes but {pids.shape[0]} pids")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "pids", pids.astype(np.int64))


@dataclass(frozen=True)
class SearchQuery:
    """One query: the frame it was cropped from (never in its own gallery), its identity and
    camera, and for CUHK-SYSU the protocol's gallery frames (``None``: every other frame)."""

    scene: str
    pid: int
    camid: int | None = None
    gallery: tuple[str, ...] | None = field(default=None)


@dataclass(frozen=True)
class SceneDetections:
    """What a detector + re-ID head found in one frame: boxes (x1, y1, x2, y2), scores, features."""

    boxes: Any
    scores: Any
    features: Any


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(len(first) x len(second)) intersection over union of (x1, y1, x2, y2) boxes."""
    first, second = np.asarray(first, dtype=np.float64)[:, None, :], np.asarray(second, dtype=np.float64)[None]
    width = np.clip(np.minimum(first[..., 2], second[..., 2]) - np.maximum(first[..., 0], second[..., 0]), 0, None)
    height = np.clip(np.minimum(first[..., 3], second[..., 3]) - np.maximum(first[..., 1], second[..., 1]), 0, None)
    inter = width * height
    area_first = (first[..., 2] - first[..., 0]) * (first[..., 3] - first[..., 1])
    area_second = (second[..., 2] - second[..., 0]) * (second[..., 3] - second[..., 1])
    return inter / (area_first + area_second - inter)


def small_box_iou_threshold(box: np.ndarray, iou_thresh: float = 0.5) -> float:
    """The CUHK-SYSU / PRW rule: small ground-truth boxes need less overlap."""
    width, height = box[2] - box[0], box[3] - box[1]
    return float(min(iou_thresh, width * height / ((width + 10) * (height + 10))))


def _average_precision_in_order(positive: np.ndarray) -> float:
    hits = np.flatnonzero(positive)
    if hits.size == 0:
        return 0.0
    return float(np.mean(np.arange(1, hits.size + 1) / (hits + 1)))


class _Gallery:
    """All kept detections of all frames, flattened in (frame, detection) order."""

    def __init__(self, scenes: Sequence[Scene], detections: Mapping[str, SceneDetections], det_thresh: float,
                 device: torch.device):
        self.scenes = list(scenes)
        self.scene_index = {scene.name: i for i, scene in enumerate(self.scenes)}
        if len(self.scene_index) != len(self.scenes):
            raise UsageError("scenes has repeated frame names")
        unknown = [name for name in detections if name not in self.scene_index]
        if unknown:
            raise UsageError(f"detections name frames missing from scenes, e.g. {unknown[0]!r}")
        boxes, scores, features, owners = [], [], [], []
        for i, scene in enumerate(self.scenes):
            found = detections.get(scene.name)
            if found is None:
                continue
            scene_boxes = np.asarray(_numpy(found.boxes), dtype=np.float64).reshape(-1, 4)
            scene_scores = np.asarray(_numpy(found.scores), dtype=np.float64).reshape(-1)
            scene_features = _numpy(found.features)
            scene_features = np.asarray(scene_features).reshape(scene_boxes.shape[0], -1)
            if not (scene_boxes.shape[0] == scene_scores.shape[0] == scene_features.shape[0]):
                raise UsageError(f"detections of {scene.name!r}: boxes, scores and features differ in length")
            keep = scene_scores >= det_thresh
            boxes.append(scene_boxes[keep])
            scores.append(scene_scores[keep])
            features.append(scene_features[keep])
            owners.append(np.full(int(keep.sum()), i, dtype=np.int64))
        if not boxes or sum(len(b) for b in boxes) == 0:
            raise UsageError(f"no detection scores at least det_thresh={det_thresh} in any gallery frame")
        self.boxes = np.concatenate(boxes)
        self.scores = np.concatenate(scores)
        self.owner = np.concatenate(owners)
        self.features = as_features(np.concatenate(features), "detection features", device)
        self.first_detection = np.searchsorted(self.owner, np.arange(len(self.scenes) + 1))


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def detection_metrics(scenes: Sequence[Scene], detections: Mapping[str, SceneDetections], det_thresh: float = 0.5,
                      iou_thresh: float = 0.5, labeled_only: bool = False) -> dict[str, float]:
    """``detection_AP`` and ``detection_recall`` in percent over all frames of ``scenes``."""
    positive, scores = [], []
    ground_truth = true_positive = 0
    for scene in scenes:
        truth = scene.boxes[scene.pids >= 0] if labeled_only else scene.boxes
        found = detections.get(scene.name)
        boxes = np.zeros((0, 4))
        if found is not None:
            kept = np.asarray(_numpy(found.scores), dtype=np.float64).reshape(-1) >= det_thresh
            boxes = np.asarray(_numpy(found.boxes), dtype=np.float64).reshape(-1, 4)[kept]
            scores.append(np.asarray(_numpy(found.scores), dtype=np.float64).reshape(-1)[kept])
        ground_truth += truth.shape[0]
        if boxes.shape[0] == 0:
            continue
        matched = np.zeros((truth.shape[0], boxes.shape[0]), dtype=bool)
        if truth.shape[0]:
            iou = box_iou(truth, boxes)
            matched = iou >= iou_thresh
            # Each detection keeps only its best box, and each box only its best detection.
            matched &= np.arange(truth.shape[0])[:, None] == iou.argmax(0)[None, :]
            matched &= np.arange(boxes.shape[0])[None, :] == iou.argmax(1)[:, None]
        positive.append(matched.any(0))
        true_positive += int(matched.sum())
    if ground_truth == 0:
        raise UsageError("scenes has no ground-truth boxes")
    recall = true_positive / ground_truth
    if not positive:
        return {"detection_AP": 0.0, "detection_recall": 0.0}
    positive_flat, scores_flat = np.concatenate(positive), np.concatenate(scores)
    order = np.argsort(-scores_flat, kind="stable")
    average_precision = _average_precision_in_order(positive_flat[order])
    return {"detection_AP": average_precision * recall * 100, "detection_recall": recall * 100}


def person_search_metrics(query_features: Any, queries: Sequence[SearchQuery], scenes: Sequence[Scene],
                          detections: Mapping[str, SceneDetections], det_thresh: float = 0.5, iou_thresh: float = 0.5,
                          exclude_same_camera: bool = False, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                          device: str | torch.device | None = None) -> dict[str, Any]:
    """``mAP``, ``top1``, ``R5``, ``R10`` (identification) and ``detection_AP``,
    ``detection_recall`` in percent, with ``valid_queries``: see the module description."""
    check_memory_budget(memory_budget)
    device = resolve_device(device, query_features)
    query_features = as_features(query_features, "query_features", device)
    if len(queries) != query_features.shape[0]:
        raise UsageError(f"queries has {len(queries)} entries but query_features has {query_features.shape[0]} rows")
    gallery = _Gallery(scenes, detections, det_thresh, device)
    if gallery.features.shape[1] != query_features.shape[1]:
        raise UsageError(f"detection features have {gallery.features.shape[1]} dimensions but query_features "
                         f"has {query_features.shape[1]}")
    query_unit = torch.nn.functional.normalize(query_features, dim=1)
    negated_gallery_t = -torch.nn.functional.normalize(gallery.features.to(query_unit.dtype), dim=1).T
    scene_of = torch.from_numpy(gallery.owner).to(device)
    num_scenes, num_detections = len(gallery.scenes), gallery.owner.shape[0]

    # Where each identity appears: (frame index, box) per labelled person.
    appearances: dict[int, list[tuple[int, np.ndarray]]] = {}
    for i, scene in enumerate(gallery.scenes):
        for box, pid in zip(scene.boxes, scene.pids):
            if pid >= 0 and not any(frame == i for frame, _ in appearances.get(int(pid), [])):
                appearances.setdefault(int(pid), []).append((i, box))

    scene_camids = np.array([-1 if scene.camid is None else scene.camid for scene in gallery.scenes])
    average_precision = np.zeros(len(queries))
    first_hit = np.full(len(queries), -1, dtype=np.int64)
    counted = np.zeros(len(queries), dtype=bool)
    step = rows_per_chunk(memory_budget, BYTES_PER_ITEM * num_detections, MAX_ROWS_PER_CHUNK)
    for start in range(0, len(queries), step):
        stop = min(len(queries), start + step)
        chunk = queries[start:stop]
        in_gallery = np.zeros((stop - start, num_scenes), dtype=bool)
        for row, query in enumerate(chunk):
            if query.scene not in gallery.scene_index:
                raise UsageError(f"query {start + row}: frame {query.scene!r} is not among the scenes")
            if query.gallery is None:
                in_gallery[row] = True
                if exclude_same_camera and query.camid is not None:
                    in_gallery[row] = scene_camids != query.camid
            else:
                for name in query.gallery:
                    if name not in gallery.scene_index:
                        raise UsageError(f"query {start + row}: gallery frame {name!r} is not among the scenes")
                    in_gallery[row, gallery.scene_index[name]] = True
            in_gallery[row, gallery.scene_index[query.scene]] = False
        similarity = query_unit[start:stop] @ negated_gallery_t          # -cos, lower first
        similarity.masked_fill_(~torch.from_numpy(in_gallery).to(device)[:, scene_of], float("inf"))
        negated = similarity.cpu().numpy()

        target_lists = []
        for row, query in enumerate(chunk):
            frames = [(frame, box) for frame, box in appearances.get(int(query.pid), []) if in_gallery[row, frame]]
            counted[start + row] = bool(frames)
            found = []
            for frame, box in frames:
                first, last = gallery.first_detection[frame], gallery.first_detection[frame + 1]
                if first == last:
                    continue
                overlap = box_iou(box[None], gallery.boxes[first:last])[0]
                candidates = np.flatnonzero(overlap >= small_box_iou_threshold(box, iou_thresh))
                if candidates.size:
                    # The most similar one; among equals, the first (the stable order).
                    found.append(first + candidates[np.argmin(negated[row, first + candidates])])
            target_lists.append((sorted(found), len(frames)))
        width = max(len(found) for found, _ in target_lists)
        targets = np.zeros((stop - start, width), dtype=np.int64)
        valid = np.zeros((stop - start, width), dtype=bool)
        for row, (found, _) in enumerate(target_lists):
            targets[row, :len(found)] = found
            valid[row, :len(found)] = True
        with one_cpu_thread(similarity.device):
            ranks, _, _ = rank_targets(similarity, torch.from_numpy(targets).to(device), torch.from_numpy(valid).to(device))
        ranks = ranks.cpu().numpy()
        for row, (found, frames_with_identity) in enumerate(target_lists):
            if not frames_with_identity or not found:
                continue
            hits = ranks[row, :len(found)]
            average_precision[start + row] = np.sum(np.arange(1, hits.size + 1) / (hits + 1)) / frames_with_identity
            first_hit[start + row] = hits[0]

    metrics: dict[str, Any] = {}
    valid_queries = int(counted.sum())
    if valid_queries < len(queries):
        warnings.warn(f"{len(queries) - valid_queries} queries have an identity that appears in none of their "
                      f"gallery frames and are skipped", NoMatchWarning, stacklevel=2)
    if valid_queries == 0:
        nan = float("nan")
        metrics.update({"mAP": nan, "top1": nan, "R5": nan, "R10": nan})
    else:
        hits = first_hit[counted]
        metrics.update({
            "mAP": float(np.mean(average_precision[counted]) * 100),
            "top1": float(np.mean((hits >= 0) & (hits < 1)) * 100),
            "R5": float(np.mean((hits >= 0) & (hits < 5)) * 100),
            "R10": float(np.mean((hits >= 0) & (hits < 10)) * 100),
        })
    metrics.update(detection_metrics(gallery.scenes, detections, det_thresh, iou_thresh))
    metrics["valid_queries"] = valid_queries
    metrics["queries"] = len(queries)
    return metrics
