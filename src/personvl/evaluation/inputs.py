"""Checked conversion of metric inputs (numpy arrays, torch tensors, lists) to torch tensors.

Every check names the argument it refuses, in one line, as a :class:`~personvl.UsageError`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch

from personvl.errors import UsageError

DEFAULT_MEMORY_BUDGET = 512 * 2**20
"""Bytes of working memory one chunk of queries may use (distances and ranking buffers)."""

# Squared norms above this would overflow float32 once two of them are added in a distance.
_MAX_SQUARED_NORM = 1e37


def resolve_device(device: str | torch.device | None, *inputs: Any) -> torch.device:
    """The device to compute on: the one asked for, else that of a tensor input on an
    accelerator, else CUDA when available, else the CPU."""
    if device is not None:
        return torch.device(device)
    for value in inputs:
        if isinstance(value, torch.Tensor) and value.device.type != "cpu":
            return value.device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{name} must be an array of numbers ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise UsageError(f"{name} must hold numbers, got dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array))


def _float_dtype(tensor: torch.Tensor, name: str) -> torch.dtype:
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise UsageError(f"{name} must be real numbers, got dtype {tensor.dtype}")
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def as_matrix(value: Any, name: str, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A non-empty, finite 2-D float tensor (float64 stays float64, anything else float32)."""
    tensor = _as_tensor(value, name)
    if tensor.ndim != 2:
        raise UsageError(f"{name} must be 2-D (items x dimensions), got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise UsageError(f"{name} is empty (shape {tuple(tensor.shape)})")
    tensor = tensor.to(device=device, dtype=dtype or _float_dtype(tensor, name))
    if not bool(torch.isfinite(tensor).all()):
        raise UsageError(f"{name} contains NaN or infinite values")
    return tensor


def as_features(value: Any, name: str, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Feature rows, checked like :func:`as_matrix` and small enough for float32 distances."""
    tensor = as_matrix(value, name, device, dtype)
    if float(tensor.abs().max()) ** 2 * tensor.shape[1] > _MAX_SQUARED_NORM:
        raise UsageError(f"{name} has values too large for distances (largest magnitude "
                         f"{float(tensor.abs().max()):.3g})")
    return tensor


def as_labels(value: Any, name: str, length: int, length_of: str, device: torch.device) -> torch.Tensor:
    """A 1-D int64 tensor of identities or cameras with one entry per item of ``length_of``."""
    tensor = _as_tensor(value, name)
    if tensor.is_floating_point() or tensor.dtype == torch.bool or tensor.is_complex():
        raise UsageError(f"{name} must be integers, got dtype {tensor.dtype}")
    if tensor.ndim != 1:
        raise UsageError(f"{name} must be 1-D, got shape {tuple(tensor.shape)}")
    if tensor.shape[0] != length:
        raise UsageError(f"{name} has {tensor.shape[0]} entries but {length_of} has {length} rows")
    return tensor.to(device=device, dtype=torch.int64)


def check_same_width(first: torch.Tensor, first_name: str, second: torch.Tensor, second_name: str) -> None:
    if first.shape[1] != second.shape[1]:
        raise UsageError(f"{second_name} has {second.shape[1]} dimensions but {first_name} has {first.shape[1]}")


def check_memory_budget(memory_budget: int) -> int:
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, np.integer)) or memory_budget < 1:
        raise UsageError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    return int(memory_budget)


def check_max_rank(max_rank: int) -> int:
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise UsageError(f"max_rank must be a positive integer, got {max_rank!r}")
    return int(max_rank)


def rows_per_chunk(memory_budget: int, bytes_per_row: int, cap: int | None = None) -> int:
    """How many query rows fit in the budget (at least one, so tiny budgets still work)."""
    rows = max(1, memory_budget // max(1, bytes_per_row))
    return min(rows, cap) if cap is not None else rows


@contextlib.contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run torch's CPU operations on the calling thread alone, then restore the thread count.

    Ranking and sparse bookkeeping are many short, memory-bound passes. Split across OpenMP
    threads they gained about 10% on an idle 2-core machine and lost ten times on a busy one:
    at every barrier one thread spins on the core its partner needs. Matrix products, long
    enough to amortise that, run outside this block with every thread.
    """
    previous = torch.get_num_threads()
    if device.type != "cpu" or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
