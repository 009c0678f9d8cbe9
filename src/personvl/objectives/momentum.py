"""Momentum-encoder contrast between two augmented views with a queue of past keys (MoCo),
VAL-PAT's self-supervised branch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from personvl.objectives.distributed import gather_batch


@torch.no_grad()
def momentum_update(online: nn.Module, momentum_encoder: nn.Module, momentum: float = 0.999) -> None:
    """``theta_k <- m * theta_k + (1 - m) * theta_q`` for every parameter; buffers are copied."""
    for online_param, key_param in zip(online.parameters(), momentum_encoder.parameters()):
        key_param.mul_(momentum).add_(online_param.detach(), alpha=1.0 - momentum)
    for online_buffer, key_buffer in zip(online.buffers(), momentum_encoder.buffers()):
        key_buffer.copy_(online_buffer)


class FeatureQueue(nn.Module):
    """A first-in first-out queue of L2-normalised keys, kept as a buffer so it is saved in
    checkpoints and a resumed run sees the same negatives.

    Under DDP ``push`` enqueues the keys of every rank, in rank order, so the queue holds the
    global batch's keys and stays identical on every rank (DDP's broadcast of rank 0's buffers
    then changes nothing). A batch with a key that is not finite is not enqueued: the step it
    came from is skipped, and one NaN key would otherwise poison every later step's negatives.
    """

    def __init__(self, size: int, dim: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=generator), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: torch.Tensor, *, across_ranks: bool = True) -> None:
        (keys,) = gather_batch(keys.detach(), across_ranks=across_ranks)
        # The gathered batch is the same on every rank, so every rank takes the same decision.
        if not bool(torch.isfinite(keys).all()):
            return
        size = self.keys.shape[0]
        count = min(keys.shape[0], size)
        start = int(self.pointer)
        positions = (torch.arange(count, device=self.keys.device) + start) % size
        self.keys[positions] = F.normalize(keys[-count:], dim=1).to(self.keys.dtype)
        self.pointer.fill_((start + count) % size)


def momentum_contrast_loss(queries: torch.Tensor, keys: torch.Tensor, queue: torch.Tensor,
                           temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE of each query against its own key (positive) and the queued keys (negatives)."""
    queries = F.normalize(queries, dim=1)
    keys = F.normalize(keys.detach(), dim=1)
    positive = (queries * keys).sum(dim=1, keepdim=True)
    negatives = queries @ queue.detach().t()
    logits = torch.cat([positive, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(queries), dtype=torch.long, device=queries.device))
