"""Zero-shot evaluation of an encoder on dataset splits, and attribute linear probes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from personvl.data.records import PersonRecord
from personvl.errors import UsageError


@dataclass
class TextToImageResult:
    metrics: dict[str, Any]
    captions: list[str]
    caption_pids: np.ndarray
    text_features: np.ndarray
    image_paths: list[str]
    image_pids: np.ndarray
    image_features: np.ndarray


def _identities(records: Sequence[PersonRecord], what: str) -> np.ndarray:
    if any(r.pid is None for r in records):
        raise UsageError(f"{what}: every record needs an identity")
    return np.array([r.pid for r in records], dtype=np.int64)


def evaluate_text_to_image(model, records: Sequence[PersonRecord], *, batch_size: int = 64) -> TextToImageResult:
    """Every caption of ``records`` queries every image of ``records`` (the text-to-image
    protocol: cosine similarity, a match shares the identity)."""
    from personvl.evaluation import retrieval_metrics
    from personvl.models.embedding import embed_images, embed_texts

    captions = [c for r in records for c in r.captions]
    if not captions:
        raise UsageError("text-to-image evaluation needs captions; these records have none")
    caption_pids = np.array([r.pid for r in records for _ in r.captions], dtype=np.int64)
    image_pids = _identities(records, "text-to-image evaluation")
    paths = [r.image_path for r in records]
    image_features = embed_images(model, paths, batch_size=batch_size, progress=False)
    text_features = embed_texts(model, captions, batch_size=batch_size * 4, progress=False)
    metrics = retrieval_metrics(text_features, image_features, caption_pids, image_pids)
    return TextToImageResult(metrics, captions, caption_pids, text_features, paths, image_pids, image_features)


def evaluate_reid(model, query: Sequence[PersonRecord], gallery: Sequence[PersonRecord], *,
                  batch_size: int = 64) -> dict[str, Any]:
    """Image re-ID with the Market-1501 protocol on the encoder's image embeddings."""
    from personvl.evaluation import reid_metrics
    from personvl.models.embedding import embed_images

    query_features = embed_images(model, [r.image_path for r in query], batch_size=batch_size, progress=False)
    gallery_features = embed_images(model, [r.image_path for r in gallery], batch_size=batch_size, progress=False)
    return reid_metrics(query_features, gallery_features, _identities(query, "query"), _identities(gallery, "gallery"),
                        np.array([r.camid for r in query]), np.array([r.camid for r in gallery]))


def linear_probe_attributes(model, train: Sequence[PersonRecord], test: Sequence[PersonRecord], *,
                            steps: int = 300, lr: float = 0.05, weight_decay: float = 1e-4, seed: int = 0,
                            batch_size: int = 64) -> dict[str, Any]:
    """Attribute recognition from frozen image embeddings: one logistic regression per
    attribute (full-batch Adam), trained on ``train`` and scored on ``test`` (mA, F1 ...)."""
    from personvl.evaluation import attribute_metrics
    from personvl.models.embedding import embed_images

    for name, records in (("train", train), ("test", test)):
        if not records or any(r.attributes is None for r in records):
            raise UsageError(f"linear probe: every {name} record needs an attribute vector")
    x_train = torch.from_numpy(embed_images(model, [r.image_path for r in train], batch_size=batch_size, progress=False))
    x_test = torch.from_numpy(embed_images(model, [r.image_path for r in test], batch_size=batch_size, progress=False))
    y_train = torch.tensor([r.attributes for r in train], dtype=torch.float32)
    y_test = np.array([r.attributes for r in test], dtype=np.int64)
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    generator = torch.Generator().manual_seed(seed)
    probe = torch.nn.Linear(x_train.shape[1], y_train.shape[1])
    with torch.no_grad():
        probe.weight.normal_(0, 0.01, generator=generator)
        probe.bias.zero_()
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(x_train), y_train)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        probabilities = torch.sigmoid(probe(x_test)).numpy()
    return attribute_metrics(probabilities, y_test)
