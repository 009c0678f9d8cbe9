"""The model an index was built with: how it is referenced, reloaded, and run in batches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from personvl.errors import PersonvlError, UsageError


def model_reference(model: str | os.PathLike, weights: str | os.PathLike | None = None) -> dict[str, str]:
    """How an index names its model so that search can rebuild the same encoder.

    A directory written by ``personvl.models.save_model`` is referenced by its absolute path; a
    registered model name needs ``weights`` (a file or folder ``create_model`` accepts), since
    without them every construction draws new random weights.
    """
    path = Path(model)
    if path.is_dir():
        if weights is not None:
            raise UsageError("weights apply to a registered model name, not to a saved model directory")
        return {"path": str(path.resolve())}
    from personvl.models import list_models

    if str(model) not in list_models():
        raise UsageError(f"{model}: neither a saved model directory nor a registered model name "
                         f"(see personvl.models.list_models())")
    if weights is None:
        raise UsageError(f"{model} without weights has random ones, which search could not rebuild; "
                         f"give its weights, or a model directory written by save_model")
    if not Path(weights).exists():
        raise PersonvlError(f"{weights}: no such file or directory")
    return {"name": str(model), "weights": str(Path(weights).resolve())}


def load_referenced_model(reference: dict[str, str]):
    """The model a reference names, in eval mode."""
    from personvl import models

    if "path" in reference:
        if not Path(reference["path"]).is_dir():
            raise PersonvlError(f"the index's model directory {reference['path']} no longer exists")
        model = models.load_model(reference["path"])
    elif "name" in reference and "weights" in reference:
        if not Path(reference["weights"]).exists():
            raise PersonvlError(f"the index's model weights {reference['weights']} no longer exist")
        model = models.create_model(reference["name"], weights=reference["weights"])
    else:
        raise PersonvlError(f"the index names its model in an unknown way: {reference}")
    model.eval()
    return model


def short_reference(reference: dict[str, str]) -> str:
    """The model's name without server paths: a registered name, or the model folder's name."""
    return reference["name"] if "name" in reference else Path(reference.get("path", "?")).name


def describe_reference(reference: dict[str, str]) -> str:
    if "name" in reference:
        return f"{reference['name']} with weights {reference.get('weights')}"
    return reference.get("path") or str(reference)


def _as_numpy(features: torch.Tensor) -> np.ndarray:
    features = features.detach().float()
    # The index relies on unit vectors (inner product = cosine); a model that already
    # normalises is unchanged by this.
    features = torch.nn.functional.normalize(features, dim=-1)
    return features.cpu().numpy().astype(np.float32, copy=False)


# A fixed description and a fixed picture whose embeddings the index keeps: if the model behind
# the reference embeds them differently later (retrained in place, other weights), the index
# no longer matches it.
PROBE_TEXT = "a person walking"


def probe_image() -> Image.Image:
    """A 64x128 colour gradient: deterministic, and not flat, so every tower layer sees signal."""
    rows, columns = np.mgrid[0:128, 0:64]
    pixels = np.stack([rows * 2, columns * 4, (rows + columns) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


class Encoder:
    """Runs a model's image and text towers without gradients, returning float32 unit rows."""

    def __init__(self, model: Any, attribute_predictor: Callable[[torch.Tensor], list[dict[str, float]]] | None = None
                 ) -> None:
        self.model = model
        self.transform: Callable[[Image.Image], torch.Tensor] = model.image_transform
        # A model folder from attribute fine-tuning carries its head beside the encoder.
        if attribute_predictor is None and callable(getattr(model, "predict_attributes", None)):
            attribute_predictor = model.predict_attributes
        self.attribute_predictor = attribute_predictor

    def image_tensor(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    @torch.inference_mode()
    def encode_tensors(self, tensors: Sequence[torch.Tensor]) -> np.ndarray:
        return _as_numpy(self.model.encode_image(torch.stack(list(tensors))))

    def encode_images(self, images: Iterable[Image.Image]) -> np.ndarray:
        return self.encode_tensors([self.transform(image) for image in images])

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return _as_numpy(self.model.encode_text(list(texts)))

    @property
    def has_attribute_head(self) -> bool:
        return self.attribute_predictor is not None

    @torch.inference_mode()
    def predict_attributes(self, tensors: Sequence[torch.Tensor]) -> list[dict[str, float]]:
        """Per image, attribute name -> probability, from the model's attribute head."""
        if self.attribute_predictor is None:
            raise PersonvlError("this model has no attribute head")
        return self.attribute_predictor(torch.stack(list(tensors)))

    def probe(self) -> dict[str, list[float]]:
        """The model's embeddings of the fixed probe text and image."""
        return {"text": [round(float(v), 6) for v in self.encode_texts([PROBE_TEXT])[0]],
                "image": [round(float(v), 6) for v in self.encode_images([probe_image()])[0]]}

    def check_probe(self, stored: dict[str, list[float]] | None, reference: dict[str, str]) -> None:
        """Refuse a model that embeds differently from the one the index was built with."""
        if stored is None:
            return
        if not isinstance(stored, dict) or not all(isinstance(stored.get(tower), list) for tower in ("text", "image")):
            raise PersonvlError("the index's record of its model is malformed; rebuild the index")
        current = self.probe()
        for tower in ("text", "image"):
            now, then = (np.asarray(values[tower], dtype=np.float32) for values in (current, stored))
            if now.shape != then.shape or float(now @ then) < 0.999:
                raise PersonvlError(f"the model {describe_reference(reference)} no longer embeds as it did when "
                                    f"the index was built (retrained or replaced); rebuild the index")
