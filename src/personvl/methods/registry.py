"""Method name -> constructor and config section."""

from __future__ import annotations

from typing import Any

import torch

from personvl.errors import UsageError
from personvl.methods.plip import PLIPConfig, PLIPMethod
from personvl.methods.unipt import UniPTConfig, UniPTMethod
from personvl.methods.valpat import VALPATConfig, VALPATMethod

METHODS = ("plip", "valpat", "unipt")


def build_method(name: str, encoder, section: Any, *, attribute_count: int = 0,
                 attribute_positive_ratio: torch.Tensor | None = None) -> torch.nn.Module:
    if name == "plip":
        return PLIPMethod(encoder, section)
    if name == "unipt":
        return UniPTMethod(encoder, section)
    if name == "valpat":
        return VALPATMethod(encoder, section, attribute_count, attribute_positive_ratio)
    raise UsageError(f"unknown method {name!r} (known: {', '.join(METHODS)})")


__all__ = ["METHODS", "PLIPConfig", "UniPTConfig", "VALPATConfig", "build_method"]
