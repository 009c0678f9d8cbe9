"""Task heads inside a saved model folder: one format for every task.

A fine-tuned model folder is the encoder's folder (``config.json``, weights, tokenizer) plus,
per task that trained one, ``heads/TASK.safetensors`` (the head's weights) and
``heads/TASK.json`` (what is needed to rebuild it: ``{"task", "kind", ...}``). The attribute
classifier, the re-ID probe's projection, the parsing head and the person-search detector are
all stored this way, so any of them can be read back by task name.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from personvl.errors import PersonvlError
from personvl.models.weight_formats import HEADS_DIR
from personvl.training.checkpointing import temporary_path, write_text_atomically


def head_files(model_dir: str | os.PathLike, task: str) -> tuple[Path, Path]:
    """(weights, description) paths of ``task``'s head in a model folder."""
    folder = Path(model_dir) / HEADS_DIR
    return folder / f"{task}.safetensors", folder / f"{task}.json"


def save_head(model_dir: str | os.PathLike, task: str, head: nn.Module, settings: dict[str, Any]) -> Path:
    """Write ``head``'s weights and ``settings`` (JSON-plain, ``kind`` among them) as ``task``'s
    head of the model folder; both files are replaced whole or not at all."""
    from safetensors.torch import save_file

    weights, description = head_files(model_dir, task)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    partial = temporary_path(weights)
    save_file(state, str(partial))
    os.replace(partial, weights)
    write_text_atomically(description, json.dumps(plain({"task": task, **settings}), indent=1) + "\n")
    return weights


def read_head(model_dir: str | os.PathLike, task: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """(settings, weights) of ``task``'s head in a model folder, or None when it has none."""
    from safetensors.torch import load_file

    weights, description = head_files(model_dir, task)
    if not description.is_file():
        return None
    try:
        settings = json.loads(description.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PersonvlError(f"{description}: not a head description ({exc})") from None
    if settings.get("task") != task:
        raise PersonvlError(f"{description} describes a {settings.get('task')!r} head, not {task!r}")
    if not weights.is_file():
        raise PersonvlError(f"{description} has no weights beside it ({weights.name})")
    return settings, load_file(str(weights))


def saved_heads(model_dir: str | os.PathLike) -> list[str]:
    """The tasks whose heads a model folder holds."""
    folder = Path(model_dir) / HEADS_DIR
    return sorted(p.stem for p in folder.glob("*.json") if (folder / f"{p.stem}.safetensors").is_file())


def load_state_exactly(module: nn.Module, weights: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Load ``weights`` into ``module``, refusing any missing, extra or reshaped tensor."""
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    reshaped = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or reshaped:
        raise PersonvlError(f"{source} does not match its description: missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}, other shapes {reshaped[:3]}")
    module.load_state_dict(weights)
    return module


def plain(value: Any) -> Any:
    """``value`` as JSON-plain data (tensors and arrays as lists, NaN as None)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "tolist"):
        return plain(value.tolist())
    return value
