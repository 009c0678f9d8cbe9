"""``create_model``: a registered architecture, optionally with weights and a tokenizer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from personvl.errors import UsageError
from personvl.models.checkpoints import Weights, attach_tokenizer, load_model, load_weights
from personvl.models.encoder import PersonEncoder
from personvl.models.registry import model_config
from personvl.models.tokenization import TextTokenizer


def create_model(name: str, weights: Weights | None = None, *,
                 tokenizer: str | os.PathLike | TextTokenizer | None = None, strict: bool = True,
                 device: str | torch.device | None = None, **overrides: Any) -> PersonEncoder:
    """Build ``name`` (see ``list_models()``) in eval mode.

    ``weights``: a personvl model folder, an official PLIP checkpoint, an OpenAI or open_clip
    CLIP file, a Hugging Face BERT folder (text tower), a backbone state dict (image tower), a
    list of these, or ``{"image": path, "text": path}``; loading is strict unless
    ``strict=False``. ``tokenizer``: a local folder, a ``vocab.txt``, a hub name or a tokenizer
    object; by default the one found beside the weights, else the architecture's own (loaded on
    first use). ``overrides``: the architecture's options, e.g. ``quick_gelu=True``,
    ``patch_stride=12``.
    """
    model = PersonEncoder(model_config(name, **overrides))
    if weights is not None:
        report = load_weights(model, weights, strict=strict)
        if tokenizer is None and report.tokenizer_dir is not None:
            tokenizer = report.tokenizer_dir
    if tokenizer is not None:
        attach_tokenizer(model, tokenizer)
    if device is not None:
        model.to(device)
    return model.eval()


def open_model(model: str | os.PathLike, weights: Weights | None = None, *,
               tokenizer: str | os.PathLike | TextTokenizer | None = None,
               device: str | torch.device | None = None, **overrides: Any) -> PersonEncoder:
    """A saved model folder (``load_model``) or a registered name (``create_model``, with the
    architecture's ``overrides``): what a command line's MODEL argument means."""
    if Path(model).is_dir():
        if weights is not None:
            raise UsageError(f"{model} is a saved model folder: it brings its own weights")
        if overrides:
            raise UsageError(f"{model} is a saved model folder: its architecture is fixed, "
                             f"so options ({', '.join(sorted(overrides))}) do not apply")
        return load_model(model, tokenizer=tokenizer, device=device)
    if "/" in str(model) or os.sep in str(model):   # model names never contain one
        raise UsageError(f"model folder {model} does not exist")
    return create_model(str(model), weights, tokenizer=tokenizer, device=device, **overrides)
