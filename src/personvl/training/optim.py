"""Optimisers with per-module learning rates, and the warm-up + cosine schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch

from personvl.errors import UsageError


@dataclass
class OptimConfig:
    name: str = "adamw"            # adan | adamw | adam | sgd
    lr: float = 1e-3
    weight_decay: float = 0.02
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0      # the cosine ends at lr * min_lr_ratio


def build_optimizer(groups: Iterable[dict], config: OptimConfig) -> torch.optim.Optimizer:
    """``groups``: dicts with ``params`` and an optional ``lr_scale`` (multiplies ``config.lr``)
    and ``weight_decay``. Frozen parameters are left out."""
    param_groups = []
    for group in groups:
        params = [p for p in group["params"] if p.requires_grad]
        if not params:
            continue
        param_groups.append({
            "params": params,
            "lr": config.lr * group.get("lr_scale", 1.0),
            "weight_decay": group.get("weight_decay", config.weight_decay),
            "name": group.get("name", f"group{len(param_groups)}"),
        })
    if not param_groups:
        raise UsageError("nothing to train: every parameter is frozen")
    name = config.name.lower()
    if name == "adan":
        from timm.optim import Adan

        return Adan(param_groups, lr=config.lr, weight_decay=config.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=config.lr, betas=config.betas)
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.betas[0], weight_decay=config.weight_decay)
    raise UsageError(f"optim.name: unknown optimiser {config.name!r} (adan, adamw, adam, sgd)")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate: linear warm-up, then a cosine to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
