"""What fully describes an encoder pair: tower settings, preprocessing and tokenizer.

A ``ModelConfig`` is plain data (JSON in a saved model's ``config.json``), so a saved model can
be rebuilt without the registry function that first produced it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from personvl.errors import PersonvlError

# Normalisation constants of the weights each family is trained from.
PLIP_MEAN = (0.357, 0.323, 0.328)
PLIP_STD = (0.252, 0.242, 0.239)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    """Evaluation preprocessing: RGB, resize to ``input_size`` (height, width), normalise."""

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"


@dataclass(frozen=True)
class TokenizerConfig:
    """``kind`` is ``bert`` (WordPiece) or ``clip`` (open_clip's BPE); ``source`` is where the
    vocabulary comes from by default: a Hugging Face name, or ``personvl:tiny`` for the
    vocabulary shipped with the package."""

    kind: str
    source: str
    max_length: int


@dataclass(frozen=True)
class ModelConfig:
    """An image tower and a text tower mapping into one ``embed_dim``-d space.

    ``image_tower`` and ``text_tower`` are the keyword arguments of a tower class plus its
    ``type`` (see ``personvl.models.image`` and ``personvl.models.text``).
    """

    architecture: str
    embed_dim: int
    image_tower: dict[str, Any]
    text_tower: dict[str, Any]
    preprocess: PreprocessConfig
    tokenizer: TokenizerConfig
    init_logit_scale: float | None = None   # learnable temperature of contrastive families
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        try:
            preprocess = dict(values["preprocess"])
            preprocess["input_size"] = tuple(preprocess["input_size"])
            preprocess["mean"] = tuple(preprocess["mean"])
            preprocess["std"] = tuple(preprocess["std"])
            return cls(
                architecture=values["architecture"],
                embed_dim=int(values["embed_dim"]),
                image_tower=dict(values["image_tower"]),
                text_tower=dict(values["text_tower"]),
                preprocess=PreprocessConfig(**preprocess),
                tokenizer=TokenizerConfig(**{k: values["tokenizer"][k] for k in ("kind", "source", "max_length")}),
                init_logit_scale=values.get("init_logit_scale"),
                overrides=dict(values.get("overrides") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PersonvlError(f"model config is incomplete or malformed ({exc!r})") from None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
