"""Strict weight loading, and the personvl model folder (safetensors + config.json + tokenizer).

``load_weights`` puts one or more weight sources into a model and refuses, by default, anything
that does not fit exactly: parameters the sources should cover but do not (missing), tensors
with no place in the model (unexpected) and shape mismatches are listed in one error. With
``strict=False`` the fitting tensors load and the rest is reported in a warning and in
``model.load_report``. A source is a path or a published name (``openai``, ``bert-base-uncased``,
``resnet50.tv_in1k``: see ``personvl.models.hub``).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence, Union

import torch
from safetensors.torch import save_file

from personvl.errors import PersonvlError
from personvl.models.config import ModelConfig
from personvl.models.encoder import PersonEncoder
from personvl.models.hub import is_hub_name, resolve_hub_weights
from personvl.models.tokenization import TextTokenizer, load_tokenizer
from personvl.models.weight_formats import (
    FORMAT_NAME, HEADS_DIR, MODEL_CONFIG_FILE, MODEL_WEIGHTS_FILE, PART_PREFIXES, TOKENIZER_DIR, WeightSource, part_of,
    read_weights,
)

FORMAT_VERSION = 1
Weights = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], Mapping[str, Union[str, os.PathLike]]]
_SHOWN = 12   # keys named per category in an error message; the report holds them all
# Tower settings that change training, not what the weights mean.
_TRAINING_ONLY_SETTINGS = ("frozen_layers",)
_PART_NAMES = {"image": "image tower", "text": "text tower", "logit_scale": "logit scale"}


@dataclass
class LoadReport:
    """What ``load_weights`` did: per-category key lists, and notes from the readers."""

    sources: list[str] = field(default_factory=list)
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    not_covered: list[str] = field(default_factory=list)   # what no source filled: left as initialised
    notes: list[str] = field(default_factory=list)
    tokenizer_dir: Path | None = None
    filled: dict[str, list[str]] = field(default_factory=dict)   # source -> the parts it filled
    loaded_keys: list[str] = field(default_factory=list, repr=False)
    heads: list[str] = field(default_factory=list)   # tasks whose fine-tuned heads the model folder holds

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def to_dict(self) -> dict:
        """The report as JSON-plain values (what a training run saves beside itself)."""
        return {"sources": self.sources, "loaded": self.loaded, "filled": self.filled,
                "left_as_initialised": self.not_covered, "notes": self.notes, "missing": self.missing,
                "unexpected": self.unexpected, "ignored": self.ignored,
                "mismatched": [[key, list(a), list(b)] for key, a, b in self.mismatched], "heads": self.heads}

    def summary_lines(self) -> list[str]:
        """What each source filled and what was left as initialised, one line each."""
        lines = [f"{source}: {', '.join(parts)}" for source, parts in self.filled.items()]
        lines.append(f"left as initialised: {', '.join(self.not_covered) or 'nothing'}")
        if self.heads:
            lines.append(f"task heads: {', '.join(self.heads)} (read by personvl.tasks)")
        lines.extend(self.notes)
        return lines

    def problems(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing {_keys(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected {_keys(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k} file {list(a)} vs model {list(b)}" for k, a, b in self.mismatched[:_SHOWN]]
            more = f", ... {len(self.mismatched) - _SHOWN} more" if len(self.mismatched) > _SHOWN else ""
            parts.append(f"{len(self.mismatched)} with another shape [{', '.join(shown)}{more}]")
        return "; ".join(parts)


class WeightsMismatchError(PersonvlError):
    """The weights do not fit the model; ``report`` lists every key."""

    def __init__(self, message: str, report: LoadReport):
        super().__init__(message)
        self.report = report


def load_weights(model: PersonEncoder, weights: Weights, *, strict: bool = True) -> LoadReport:
    """Load ``weights`` into ``model``: one path, a list of paths (each covering the parts it
    has: e.g. a CLIP file and a BERT folder), or ``{"image": path, "text": path}`` to take
    only that part of each file. Returns the report (also kept as ``model.load_report``)."""
    report = LoadReport()
    combined: dict[str, torch.Tensor] = {}
    optional: list[str] = []
    covered: dict[str, str] = {}   # model key prefix -> the source filling it
    filled_by: dict[str, set[str]] = {}
    left: dict[str, str] = {}      # model key prefix -> why its source leaves it as initialised
    for path, only in _normalise(weights):
        label = str(path)
        hub = None
        if isinstance(path, str):
            hub = resolve_hub_weights(str(path), only, model.config)
            path, label = hub.path, f"{path} ({hub.description})"
        source = read_weights(path, model)
        if hub is not None and hub.quick_gelu:
            source.quick_gelu = True
        _check_compatible(source, model, only)
        state, prefixes = source.state, source.covered_prefixes
        if only is not None:
            if only not in source.parts:
                raise PersonvlError(f"{path} has no {_PART_NAMES[only]} weights (it has: "
                                    f"{', '.join(_PART_NAMES.get(p, p) for p in sorted(source.parts))})")
            report.notes.extend(f"{_PART_NAMES.get(p, p)} of {path} not used"
                                for p in sorted(source.parts - {only}))
            state = {k: v for k, v in state.items() if part_of(k) == only}
            prefixes = tuple(p for p in prefixes if part_of(p) == only)
        for prefix in prefixes:
            clash = next((other for other in covered if other.startswith(prefix) or prefix.startswith(other)), None)
            if clash is not None:
                raise PersonvlError(f"two weight sources for {clash.rstrip('.')}: {covered[clash]} and {path} "
                                    "(weights={'image': ..., 'text': ...} takes one part of each)")
            covered[prefix] = label
        combined.update(state)
        filled_by[label] = set(state)
        for prefix, reason in source.leaves.items():
            if only is None or part_of(prefix) == only:
                left[prefix] = reason
                report.notes.append(f"{prefix.rstrip('.')} from {label}: {reason}")
        report.unexpected.extend(k for k in source.unexpected if only is None or part_of(k) == only)
        optional.extend(source.optional_prefixes)
        report.sources.append(label if hub is not None else f"{path} ({source.kind})")
        report.notes.extend(source.notes)
        if source.tokenizer_dir is not None and only in (None, "text"):
            report.tokenizer_dir = source.tokenizer_dir

    model_state = model.state_dict()
    # Buffers a model recomputes (attention masks, position ids) are not weights; TorchScript
    # archives and old checkpoints store them anyway.
    derived = {name for name, _ in model.named_buffers()} - set(model_state)
    covered_prefixes = tuple(covered)
    expected = {k for k in model_state if k.startswith(covered_prefixes) and not k.startswith(tuple(left))}
    report.not_covered = _summarise_keys(sorted(set(model_state) - expected), list(model_state))
    report.missing = sorted(expected - set(combined))
    fitting = {}
    for key, value in combined.items():
        if key in model_state:
            if tuple(value.shape) == tuple(model_state[key].shape):
                fitting[key] = value
            else:
                report.mismatched.append((key, tuple(value.shape), tuple(model_state[key].shape)))
        elif key in derived or key.startswith(tuple(optional)):
            report.ignored.append(key)
        else:
            report.unexpected.append(key)
    report.unexpected = sorted(set(report.unexpected))
    report.ignored.sort()
    if not report.fits:
        message = f"weights {' + '.join(report.sources)} do not fit {model.name}: {report.problems()}"
        if strict:
            raise WeightsMismatchError(message + " (strict=False loads the rest)", report)
        warnings.warn(message, stacklevel=2)
    with torch.no_grad():
        model.load_state_dict(fitting, strict=False)
    report.loaded = len(fitting)
    report.loaded_keys = sorted(fitting)
    all_keys = list(model_state)
    report.filled = {label: _summarise_keys(sorted(keys & set(fitting)), all_keys) for label, keys in filled_by.items()}
    model.load_report = report
    return report


def save_model(model: PersonEncoder, directory: str | os.PathLike) -> Path:
    """Write ``model`` to ``directory``: ``model.safetensors``, ``config.json`` (architecture,
    preprocessing, tokenizer) and the tokenizer's files under ``tokenizer/``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PersonvlError(f"cannot write to {directory}: {exc.strerror}") from None
    tokenizer = model.tokenizer   # loads the default one now, so a missing one fails before writing
    # config.json, which load_model needs, is removed first and written last: a kill mid-export
    # leaves a folder that no load accepts, never new weights beside an old or half tokenizer.
    (directory / MODEL_CONFIG_FILE).unlink(missing_ok=True)
    state = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    _write_atomically(directory / MODEL_WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    tokenizer.save(directory / TOKENIZER_DIR)
    from personvl import __version__

    document = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "personvl_version": __version__,
                **model.config.to_dict()}
    document["tokenizer"]["files"] = TOKENIZER_DIR
    _write_atomically(directory / MODEL_CONFIG_FILE,
                      lambda tmp: tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8"))
    return directory


def load_model(directory: str | os.PathLike, *, tokenizer: str | os.PathLike | TextTokenizer | None = None,
               device: str | torch.device | None = None) -> PersonEncoder:
    """The model saved in ``directory`` by ``save_model``, in eval mode, with its tokenizer
    (or ``tokenizer``: a folder, hub name or tokenizer object)."""
    directory = Path(directory).expanduser()
    document = read_model_document(directory)
    model = PersonEncoder(ModelConfig.from_dict(document))
    load_weights(model, directory, strict=True)
    heads = directory / HEADS_DIR
    model.load_report.heads = sorted(p.stem for p in heads.glob("*.json") if p.with_suffix(".safetensors").is_file())
    attach_tokenizer(model, tokenizer if tokenizer is not None else directory / TOKENIZER_DIR)
    if device is not None:
        model.to(device)
    return model.eval()


def read_model_document(directory: Path) -> dict:
    """The config.json of a personvl model folder, checked to be one."""
    config_file = directory / MODEL_CONFIG_FILE
    if not config_file.is_file():
        raise PersonvlError(f"{directory} is not a personvl model folder (no {MODEL_CONFIG_FILE})")
    try:
        document = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PersonvlError(f"cannot read {config_file}: {exc}") from None
    if document.get("format") != FORMAT_NAME:
        raise PersonvlError(f"{config_file} is not a personvl model config (format {document.get('format')!r})")
    if document.get("format_version", 0) > FORMAT_VERSION:
        raise PersonvlError(f"{directory} was written by a newer personvl (format {document['format_version']})")
    return document


def attach_tokenizer(model: PersonEncoder, tokenizer: str | os.PathLike | TextTokenizer) -> None:
    """Give ``model`` a tokenizer object, or the one loaded from a folder / hub name."""
    if isinstance(tokenizer, (str, os.PathLike)):
        spec = model.config.tokenizer
        tokenizer = load_tokenizer(spec.kind, tokenizer, spec.max_length)
    model.tokenizer = tokenizer


def _normalise(weights: Weights) -> list[tuple[str | Path, str | None]]:
    # Hub names stay strings: Path("openai") would read as a relative path.
    def entry(value):
        return value if isinstance(value, str) and is_hub_name(value) else Path(value)

    if isinstance(weights, (str, os.PathLike)):
        return [(entry(weights), None)]
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - {"image", "text"})
        if unknown:
            raise PersonvlError(f"weights parts are 'image' and 'text', got {unknown[0]!r}")
        return [(entry(path), part) for part, path in weights.items()]
    return [(entry(path), None) for path in weights]


def frozen_without_weights(model: PersonEncoder) -> list[str]:
    """Frozen parameters of ``model`` that no weight source filled: they would train at their
    random initialisation, never moving. Empty for a model whose frozen parts were loaded."""
    report = model.load_report
    loaded = set(report.loaded_keys) if report is not None else set()
    return [name for name, parameter in model.named_parameters() if not parameter.requires_grad and name not in loaded]


def _check_compatible(source: WeightSource, model: PersonEncoder, only: str | None = None) -> None:
    if source.quick_gelu:
        used = {"image": (model.config.image_tower,), "text": (model.config.text_tower,)}
        towers = used.get(only, (model.config.image_tower, model.config.text_tower))
        if any(tower.get("quick_gelu") is False for tower in towers):
            raise PersonvlError(f"{source.path} was trained with QuickGELU: create the model with quick_gelu=True")
    if source.config is not None:
        for tower in ("image_tower", "text_tower"):
            theirs = _meaningful(source.config.get(tower) or {})
            ours = _meaningful(model.config.to_dict()[tower])
            # BoT fine-tunes a stride-2 pre-trained ResNet with last_stride=1: the same tensors,
            # the attention pool's grid interpolated (weight_formats). The reverse is refused: a
            # re-ID model read at stride 2 would silently not be the model that was trained.
            strides = (theirs.pop("last_stride", 2), ours.pop("last_stride", 2))
            if strides == (2, 1):
                source.notes.append(f"{model.name} uses last_stride=1 with the stride-2 image tower of {source.path}")
            elif strides[0] != strides[1]:
                theirs["last_stride"], ours["last_stride"] = strides
            if theirs != ours:
                differing = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
                raise PersonvlError(
                    f"{source.path} holds a {source.config.get('architecture')} whose {tower.replace('_', ' ')} "
                    f"differs from {model.name}'s in {', '.join(differing)}: load it with load_model")


def _meaningful(tower: dict) -> dict:
    return {k: v for k, v in json.loads(json.dumps(tower)).items() if k not in _TRAINING_ONLY_SETTINGS}


def _summarise_keys(keys: list[str], all_keys: list[str]) -> list[str]:
    """Whole parts by name ("image tower"), most of a part as the part but some modules
    ("image tower except visual.attnpool"), else the modules (first two name components)."""
    summary = []
    chosen = set(keys)
    for part, prefix in PART_PREFIXES.items():
        in_part = [k for k in keys if k.startswith(prefix)]
        if not in_part:
            continue
        rest = [k for k in all_keys if k.startswith(prefix) and k not in chosen]
        if not rest:
            summary.append(_PART_NAMES[part])
        elif len(rest) < len(in_part):
            summary.append(f"{_PART_NAMES[part]} except {', '.join(_modules(rest))}")
        else:
            summary.extend(_modules(in_part))
    return summary


def _modules(keys: list[str]) -> list[str]:
    return sorted({".".join(k.split(".")[:2]) for k in keys})


def _keys(keys: list[str]) -> str:
    more = f", ... {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"[{', '.join(keys[:_SHOWN])}{more}]"


def _write_atomically(target: Path, write) -> None:
    tmp = target.with_name(target.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise PersonvlError(f"cannot write {target}: {exc.strerror}") from None
