"""The named architectures: each name maps to a function returning its ``ModelConfig``.

Keyword-only arguments of that function are the overrides ``create_model`` accepts
(``create_model("clip-vitb16-reid", patch_stride=12)``); anything else is refused by name.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from personvl.errors import UsageError
from personvl.models.config import ModelConfig


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build_config: Callable[..., ModelConfig]
    description: str
    weights: tuple[str, ...]      # the kinds of weights files ``weights=`` takes for it
    # Other families' options it cannot have -> why, and what to use instead.
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def options(self) -> dict[str, Any]:
        """Override name -> default."""
        return {name: p.default for name, p in inspect.signature(self.build_config).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, build_config: Callable[..., ModelConfig], description: str,
                   weights: tuple[str, ...], refused: dict[str, str] | None = None) -> None:
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = ModelEntry(name, build_config, description, weights, dict(refused or {}))


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, sorted; ``pattern`` filters with shell wildcards (``"tiny-*"``)."""
    _load_architectures()
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names


def model_entry(name: str) -> ModelEntry:
    _load_architectures()
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else f" (known: {', '.join(sorted(_MODELS))})"
        raise UsageError(f"unknown model '{name}'{hint}")
    return _MODELS[name]


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The full configuration of ``name`` with ``overrides`` applied."""
    entry = model_entry(name)
    options = entry.options
    unknown = sorted(set(overrides) - set(options))
    refused = [option for option in unknown if option in entry.refused]
    if refused:
        raise UsageError(f"model '{name}' has no option '{refused[0]}': {entry.refused[refused[0]]}")
    if unknown:
        known = ", ".join(options) or "none"
        raise UsageError(f"model '{name}' has no option '{unknown[0]}' (its options: {known})")
    try:
        config = entry.build_config(**overrides)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"model '{name}': {exc}") from None
    # Through JSON-plain values, so a config built here equals the same config read back from
    # a saved model's config.json.
    return ModelConfig.from_dict(replace(config, architecture=name, overrides=dict(overrides)).to_dict())


def _load_architectures() -> None:
    # The zoo registers itself on import; importing here keeps the registry free of cycles.
    import personvl.models.architectures  # noqa: F401


@dataclass(frozen=True)
class ModelSummary:
    name: str
    description: str
    input_size: tuple[int, int]
    embed_dim: int
    image_tower: str
    text_tower: str
    weights: tuple[str, ...]
    options: dict[str, Any]
    parameters: int | None = None


def describe_model(name: str, *, count_parameters: bool = False) -> ModelSummary:
    """What ``name`` is: input size, embedding size, towers, accepted weights, options; with
    ``count_parameters`` its parameters are counted (on the meta device: no memory, no time)."""
    entry = model_entry(name)
    config = model_config(name)
    parameters = None
    if count_parameters:
        import torch

        from personvl.models.encoder import PersonEncoder

        with torch.device("meta"):
            parameters = sum(p.numel() for p in PersonEncoder(config).parameters())
    return ModelSummary(name, entry.description, tuple(config.preprocess.input_size), config.embed_dim,
                        _tower_name(config.image_tower), _tower_name(config.text_tower), entry.weights,
                        entry.options, parameters)


def _tower_name(tower: dict[str, Any]) -> str:
    kind = tower["type"]
    if kind == "modified_resnet":
        return f"ModifiedResNet {'-'.join(str(n) for n in tower['layers'])} width {tower['width']}"
    if kind == "vision_transformer":
        stride = tower.get("patch_stride") or tower["patch_size"]
        return (f"ViT {tower['layers']}x{tower['width']} patch {tower['patch_size']} stride {stride}, "
                f"{tower['pool']} pooling")
    if kind == "timm":
        return f"timm {tower['model_name']}, {tower['projection']} head"
    if kind == "bert":
        bert = tower["bert"]
        return f"BERT {bert['num_hidden_layers']}x{bert['hidden_size']}, {tower['pooling']}"
    if kind == "clip_text":
        return f"CLIP text {tower['layers']}x{tower['width']}"
    return kind
