"""Gathering a batch from every DDP rank, so that a contrastive loss sees the global batch.

Under DDP each rank holds ``b`` of the ``B = N * b`` samples of a step. A contrastive loss on
the local rows alone would contrast ``b`` samples instead of ``B`` — a different method (fewer
negatives, another temperature regime). The losses in this package therefore gather features
and identity labels from every rank, in rank order, and compute the *global* loss.

How the gradient stays exact. Every rank computes the same global loss ``L`` on the same
gathered features ``z = [z_0, ..., z_{N-1}]``; one process on the concatenated batch would
give the parameters ``dL/dtheta = sum_r dL/dz_r * dz_r/dtheta``. The gather's backward
all-reduces (sums) the gradient of the gathered tensor over the ranks and keeps the local
slot, so rank r's local features receive ``N * dL/dz_r``; DDP then averages the parameter
gradients over the N ranks, which gives exactly the single-process gradient. Parameters that
enter the loss directly (a learned logit scale) get the full ``dL/dscale`` on every rank, which
DDP's average leaves unchanged. (open_clip's default, a gather without gradient that puts the
local features back in their slot, yields ``1 / N`` of that gradient; computing only the local
rows against the global columns, as its ``local_loss`` does, is exact too and cheaper in the
logits, but reports a different loss value on each rank.)

Gloo has no reduce-scatter, so the backward is an all-reduce followed by a slice, which every
backend supports. The collectives run on every call: every rank must call a gathering loss the
same number of times in the same order (as DDP training does), or pass ``across_ranks=False``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def distributed_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gathers_across_ranks(enabled: bool = True) -> bool:
    """Whether a loss called with ``across_ranks=enabled`` gathers: a process group of more than
    one rank is initialised and the caller has not turned it off."""
    return enabled and distributed_world()[1] > 1


def _local_sizes(rows: int, device: torch.device) -> list[int]:
    world_size = dist.get_world_size()
    local = torch.tensor([rows], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(local) for _ in range(world_size)]
    dist.all_gather(sizes, local)
    return [int(s) for s in sizes]


def _gather_rows(tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """The rows of every rank concatenated in rank order; shorter parts travel zero-padded,
    since ``all_gather`` needs equal shapes."""
    longest = max(sizes)
    tensor = tensor.contiguous()
    if tensor.shape[0] < longest:
        padding = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        tensor = torch.cat([tensor, padding])
    parts = [torch.empty_like(tensor) for _ in sizes]
    dist.all_gather(parts, tensor)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


class _GatherWithGradient(torch.autograd.Function):
    """All-gather whose backward sums the gathered gradient over the ranks and returns the
    local slot (see the module docstring for why this gives the single-process gradient)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        rank = dist.get_rank()
        ctx.start, ctx.rows = sum(sizes[:rank]), sizes[rank]
        return _gather_rows(tensor, sizes)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor):
        gradient = gradient.contiguous().clone()
        dist.all_reduce(gradient, op=dist.ReduceOp.SUM)
        return gradient[ctx.start:ctx.start + ctx.rows], None


def gather_batch(*tensors: torch.Tensor | None, across_ranks: bool = True) -> tuple[torch.Tensor | None, ...]:
    """Every rank's rows of each tensor, concatenated in rank order (rank 0's first).

    A tensor that requires a gradient keeps it: its local rows receive the summed gradient of
    the gathered tensor (see the module docstring); others (identity labels, keys) are gathered
    as data. ``None`` stays ``None``. Ranks may hold different numbers of rows; all tensors of
    one call must have the same number of rows on a rank. Without a process group of more than
    one rank, or with ``across_ranks=False``, the tensors come back unchanged."""
    if not gathers_across_ranks(across_ranks):
        return tensors
    present = [t for t in tensors if t is not None]
    if not present:
        return tensors
    rows = {int(t.shape[0]) for t in present}
    if len(rows) != 1:
        raise ValueError(f"tensors gathered together must have the same number of rows, got {sorted(rows)}")
    sizes = _local_sizes(rows.pop(), present[0].device)
    gathered = []
    for tensor in tensors:
        if tensor is None:
            gathered.append(None)
        elif tensor.requires_grad and torch.is_grad_enabled():
            gathered.append(_GatherWithGradient.apply(tensor, sizes))
        else:
            gathered.append(_gather_rows(tensor.detach(), sizes))
    return tuple(gathered)
