"""Streaming evaluators in the detectron2 / fast-reid style: ``reset``, ``process(batch, outputs)``
per batch, ``evaluate()`` once.

Features are appended to growing buffers (no per-sample Python lists); attribute and parsing
evaluators keep only counts. ``batch`` is a mapping of the batch's annotations, ``outputs``
the model's output for it (a tensor, or a mapping holding it):

=======================  ==========================================  =============================
evaluator                ``batch`` keys                              ``outputs``
=======================  ==========================================  =============================
RetrievalEvaluator       ``pids``, ``is_query``                      features (or ``["features"]``)
ReidEvaluator            ``pids``, ``camids``, ``is_query``          features (or ``["features"]``)
AttributeEvaluator       ``attributes`` (0/1)                        probabilities, or ``["logits"]``
ParsingEvaluator         ``masks`` (N x H x W class maps)            class maps, or N x C x H x W scores
PersonSearchEvaluator    ``scenes`` (frame names) or ``queries``     ``boxes``/``scores``/``features``
                         (query indices)                             per frame, or query features
=======================  ==========================================  =============================

``is_query`` is one bool for the whole batch or one per item; without it, the first
``num_query`` items streamed are the queries (fast-reid's convention).
"""

from __future__ import annotations

import abc
from typing import Any, Mapping, Sequence

import torch

from personvl.errors import UsageError
from personvl.evaluation.attributes import AttributeCounts
from personvl.evaluation.inputs import DEFAULT_MEMORY_BUDGET
from personvl.evaluation.parsing import ConfusionMatrix
from personvl.evaluation.person_search import Scene, SceneDetections, SearchQuery, person_search_metrics
from personvl.evaluation.retrieval import RerankSettings, reid_metrics, retrieval_metrics


class Evaluator(abc.ABC):
    """``reset()``, then ``process(batch, outputs)`` for every batch, then ``evaluate()``."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget everything processed so far."""

    @abc.abstractmethod
    def process(self, batch: Mapping[str, Any], outputs: Any) -> None:
        """Take in one batch of annotations and the model's outputs for it."""

    @abc.abstractmethod
    def evaluate(self) -> dict[str, Any]:
        """The metrics of everything processed since the last reset."""


class GrowingBuffer:
    """Rows appended batch by batch into one tensor whose capacity doubles when full."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self._data: torch.Tensor | None = None
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, rows: torch.Tensor) -> None:
        rows = rows.detach().to(self.device)
        if self._data is not None and rows.shape[1:] != self._data.shape[1:]:
            raise UsageError(f"a batch has items of shape {tuple(rows.shape[1:])}, earlier batches "
                             f"{tuple(self._data.shape[1:])}")
        needed = self._size + rows.shape[0]
        if self._data is None or needed > self._data.shape[0]:
            capacity = max(needed, 2 * (0 if self._data is None else self._data.shape[0]), 64)
            grown = torch.empty((capacity, *rows.shape[1:]), dtype=rows.dtype, device=self.device)
            if self._data is not None:
                grown[:self._size] = self._data[:self._size]
            self._data = grown
        self._data[self._size:needed] = rows
        self._size = needed

    def values(self) -> torch.Tensor:
        if self._data is None:
            raise UsageError("no batch was processed")
        return self._data[:self._size]


def _tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{name} must be an array ({exc})") from None


def _pick(outputs: Any, keys: Sequence[str], what: str) -> tuple[str | None, Any]:
    if not isinstance(outputs, Mapping):
        return None, outputs
    for key in keys:
        if key in outputs:
            return key, outputs[key]
    raise UsageError(f"outputs must be {what} or a mapping with one of {', '.join(repr(k) for k in keys)}")


def _batch_value(batch: Mapping[str, Any], key: str, evaluator: str) -> Any:
    if key not in batch:
        raise UsageError(f"{evaluator}: batch has no {key!r} entry")
    return batch[key]


class _QueryGalleryEvaluator(Evaluator):
    """Collects features, identities (and cameras) of queries and gallery items."""

    uses_cameras = False

    def __init__(self, num_query: int | None, storage_device: str | torch.device):
        self.num_query = num_query
        self.storage_device = storage_device
        self.reset()

    def reset(self) -> None:
        self._features = {side: GrowingBuffer(self.storage_device) for side in ("query", "gallery")}
        self._pids = {side: GrowingBuffer() for side in ("query", "gallery")}
        self._camids = {side: GrowingBuffer() for side in ("query", "gallery")}
        self._streamed = 0

    def process(self, batch: Mapping[str, Any], outputs: Any) -> None:
        name = type(self).__name__
        _, features = _pick(outputs, ("features",), "a feature tensor")
        features = _tensor(features, "features")
        if features.ndim != 2:
            raise UsageError(f"{name}: features must be (batch x dimensions), got shape {tuple(features.shape)}")
        size = features.shape[0]
        pids = _tensor(_batch_value(batch, "pids", name), "pids").reshape(-1)
        if pids.numel() != size:
            raise UsageError(f"{name}: batch['pids'] has {pids.numel()} entries for {size} feature rows")
        camids = None
        if self.uses_cameras:
            camids = _tensor(_batch_value(batch, "camids", name), "camids").reshape(-1)
            if camids.numel() != size:
                raise UsageError(f"{name}: batch['camids'] has {camids.numel()} entries for {size} feature rows")
        is_query = self._query_mask(batch, size, name)
        for side, mask in (("query", is_query), ("gallery", ~is_query)):
            if bool(mask.any()):
                self._features[side].append(features[mask.to(features.device)])
                self._pids[side].append(pids[mask.to(pids.device)].cpu())
                if camids is not None:
                    self._camids[side].append(camids[mask.to(camids.device)].cpu())
        self._streamed += size

    def _query_mask(self, batch: Mapping[str, Any], size: int, name: str) -> torch.Tensor:
        if "is_query" in batch:
            flags = _tensor(batch["is_query"], "is_query").to(torch.bool).reshape(-1).cpu()
            if flags.numel() == 1:
                return flags.expand(size)
            if flags.numel() != size:
                raise UsageError(f"{name}: batch['is_query'] has {flags.numel()} entries for {size} items")
            return flags
        if self.num_query is None:
            raise UsageError(f"{name}: give batch['is_query'] or num_query when creating the evaluator")
        return torch.arange(self._streamed, self._streamed + size) < self.num_query

    def _side(self, side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if not len(self._features[side]):
            raise UsageError(f"{type(self).__name__}: no {side} items were processed")
        camids = self._camids[side].values() if self.uses_cameras else None
        return self._features[side].values(), self._pids[side].values(), camids


class RetrievalEvaluator(_QueryGalleryEvaluator):
    """Text-to-image retrieval (:func:`personvl.evaluation.retrieval_metrics`) over streamed
    caption (query) and image (gallery) features."""

    def __init__(self, max_rank: int = 10, num_query: int | None = None, *,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, device: str | torch.device | None = None,
                 storage_device: str | torch.device = "cpu"):
        self.max_rank, self.memory_budget, self.device = max_rank, memory_budget, device
        super().__init__(num_query, storage_device)

    def evaluate(self) -> dict[str, Any]:
        query, query_pids, _ = self._side("query")
        gallery, gallery_pids, _ = self._side("gallery")
        return retrieval_metrics(query, gallery, query_pids, gallery_pids, max_rank=self.max_rank,
                                 memory_budget=self.memory_budget, device=self.device)


class ReidEvaluator(_QueryGalleryEvaluator):
    """Image re-ID (:func:`personvl.evaluation.reid_metrics`, Market-1501 protocol) over
    streamed query and gallery features."""

    uses_cameras = True

    def __init__(self, metric: str = "cosine", max_rank: int = 50, rerank: bool | RerankSettings = False,
                 num_query: int | None = None, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 device: str | torch.device | None = None, storage_device: str | torch.device = "cpu"):
        self.metric, self.max_rank, self.rerank = metric, max_rank, rerank
        self.memory_budget, self.device = memory_budget, device
        super().__init__(num_query, storage_device)

    def evaluate(self) -> dict[str, Any]:
        query, query_pids, query_camids = self._side("query")
        gallery, gallery_pids, gallery_camids = self._side("gallery")
        return reid_metrics(query, gallery, query_pids, gallery_pids, query_camids, gallery_camids,
                            metric=self.metric, max_rank=self.max_rank, rerank=self.rerank,
                            memory_budget=self.memory_budget, device=self.device)


class AttributeEvaluator(Evaluator):
    """Attribute recognition (:func:`personvl.evaluation.attribute_metrics`) from counts only.
    ``outputs``: probabilities, or a mapping with ``"probabilities"`` or ``"logits"``."""

    def __init__(self, threshold: float = 0.5, attribute_names: Sequence[str] | None = None):
        self.counts = AttributeCounts(threshold, attribute_names)

    def reset(self) -> None:
        self.counts.reset()

    def process(self, batch: Mapping[str, Any], outputs: Any) -> None:
        key, scores = _pick(outputs, ("probabilities", "logits"), "a probability tensor")
        scores = _tensor(scores, key or "probabilities")
        if key == "logits":
            scores = torch.sigmoid(scores.float())
        self.counts.add(scores.float().cpu(), _tensor(_batch_value(batch, "attributes", "AttributeEvaluator"),
                                                      "attributes").cpu())

    def evaluate(self) -> dict[str, Any]:
        return self.counts.metrics()


class ParsingEvaluator(Evaluator):
    """Human parsing (:func:`personvl.evaluation.parsing_metrics`) from an accumulated confusion
    matrix. ``outputs``: class maps (N x H x W), or scores (N x C x H x W, arg-maxed over C), or
    a mapping with ``"predictions"`` or ``"logits"``."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        self.matrix = ConfusionMatrix(num_classes, ignore_index)

    def reset(self) -> None:
        self.matrix.reset()

    def process(self, batch: Mapping[str, Any], outputs: Any) -> None:
        _, predicted = _pick(outputs, ("predictions", "logits"), "class maps or scores")
        predicted = _tensor(predicted, "predictions")
        targets = _tensor(_batch_value(batch, "masks", "ParsingEvaluator"), "masks")
        if predicted.is_floating_point() and predicted.ndim == targets.ndim + 1:
            predicted = predicted.argmax(1)
        self.matrix.add(predicted, targets.to(predicted.device))

    def evaluate(self) -> dict[str, Any]:
        return self.matrix.metrics()


class PersonSearchEvaluator(Evaluator):
    """Person search (:func:`personvl.evaluation.person_search_metrics`): gallery batches give
    ``batch["scenes"]`` and per-frame ``boxes``, ``scores``, ``features``; query batches give
    ``batch["queries"]`` (indices into ``queries``) and the query features."""

    def __init__(self, queries: Sequence[SearchQuery], scenes: Sequence[Scene], det_thresh: float = 0.5,
                 iou_thresh: float = 0.5, exclude_same_camera: bool = False, *,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, device: str | torch.device | None = None):
        self.queries, self.scenes = list(queries), list(scenes)
        self.det_thresh, self.iou_thresh, self.exclude_same_camera = det_thresh, iou_thresh, exclude_same_camera
        self.memory_budget, self.device = memory_budget, device
        self.reset()

    def reset(self) -> None:
        self.detections: dict[str, SceneDetections] = {}
        self.query_features: torch.Tensor | None = None
        self.seen_queries = torch.zeros(len(self.queries), dtype=torch.bool)

    def process(self, batch: Mapping[str, Any], outputs: Any) -> None:
        if "scenes" in batch:
            if not isinstance(outputs, Mapping) or not {"boxes", "scores", "features"} <= set(outputs):
                raise UsageError("PersonSearchEvaluator: gallery outputs must map 'boxes', 'scores' and 'features'")
            names = list(batch["scenes"])
            for key in ("boxes", "scores", "features"):
                if len(outputs[key]) != len(names):
                    raise UsageError(f"PersonSearchEvaluator: outputs[{key!r}] has {len(outputs[key])} entries "
                                     f"for {len(names)} scenes")
            for i, name in enumerate(names):
                self.detections[name] = SceneDetections(
                    *(_tensor(outputs[key][i], key).detach().cpu() for key in ("boxes", "scores", "features")))
            return
        indices = _tensor(_batch_value(batch, "queries", "PersonSearchEvaluator"), "queries").reshape(-1).long()
        _, features = _pick(outputs, ("features",), "a feature tensor")
        features = _tensor(features, "features").detach().cpu()
        if features.ndim != 2 or features.shape[0] != indices.numel():
            raise UsageError(f"PersonSearchEvaluator: {indices.numel()} query indices but features of shape "
                             f"{tuple(features.shape)}")
        if self.query_features is None:
            self.query_features = torch.zeros(len(self.queries), features.shape[1], dtype=features.dtype)
        self.query_features[indices] = features
        self.seen_queries[indices] = True

    def evaluate(self) -> dict[str, Any]:
        if self.query_features is None or not bool(self.seen_queries.all()):
            missing = int((~self.seen_queries).sum())
            raise UsageError(f"PersonSearchEvaluator: {missing} queries have no features yet")
        return person_search_metrics(self.query_features, self.queries, self.scenes, self.detections,
                                     self.det_thresh, self.iou_thresh, self.exclude_same_camera,
                                     memory_budget=self.memory_budget, device=self.device)
