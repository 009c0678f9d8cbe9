"""Reading the field's MATLAB 5 annotation files (shared conventions in docs/datasets.md).

``scipy.io.loadmat`` returns integer-valued arrays in the smallest stored integer type (uint8
labels, uint16 indices), cell arrays as object arrays whose items are wrapped in 1-element
arrays, and structs as 1x1 structured arrays. These helpers unwrap them and cast to int64
before any arithmetic, and turn every surprise into an error naming the file and variable.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from personvl.errors import PersonvlError


def load_mat(path: Path, expected: str, cache: bool = False) -> dict[str, Any]:
    """The variables of a .mat file (MATLAB 5/7; v7.3 HDF5 files are refused with a hint).

    ``cache`` keeps the last few split files, which every split of a set reads again; the key
    includes size and modification time, so an edited file is read anew.
    """
    if not path.is_file():
        raise PersonvlError(f"{path}: not found; expected {expected}")
    if cache:
        stat = path.stat()
        return _load_cached(str(path), stat.st_size, stat.st_mtime_ns)
    return _load(str(path))


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    return _load(path)


def _load(path: str) -> dict[str, Any]:
    import scipy.io

    try:
        return scipy.io.loadmat(path)
    except NotImplementedError:
        raise PersonvlError(f"{path}: a MATLAB v7.3 (HDF5) file; save it as -v7 (MATLAB 5 format) to read it") from None
    except (ValueError, TypeError, OSError, IndexError, EOFError, KeyError) as exc:
        raise PersonvlError(f"{path}: not a readable MATLAB .mat file ({exc})") from None


def variable(variables: dict[str, Any], name: str, path: Path) -> Any:
    if name not in variables:
        present = ", ".join(sorted(k for k in variables if not k.startswith("__"))) or "nothing"
        raise PersonvlError(f"{path}: variable {name!r} not found (the file holds: {present})")
    return variables[name]


def unwrap(value: Any) -> Any:
    """The single item inside MATLAB's nesting of 1-element arrays."""
    while isinstance(value, np.ndarray):
        if value.size != 1:
            return value
        value = value.reshape(-1)[0]
    return value


def text(value: Any, path: Path, what: str) -> str:
    item = unwrap(value)
    if isinstance(item, np.ndarray) and item.size == 0:
        return ""
    if not isinstance(item, str):
        raise PersonvlError(f"{path}: {what}: expected a string, got {type(item).__name__}")
    return item


def strings(cell: Any, path: Path, what: str) -> list[str]:
    """A cell array of strings (any orientation) as a list."""
    if not isinstance(cell, np.ndarray):
        raise PersonvlError(f"{path}: {what}: expected a cell array of strings")
    return [text(item, path, f"{what}[{i}]") for i, item in enumerate(cell.reshape(-1))]


def integers(array: Any, path: Path, what: str) -> np.ndarray:
    """A numeric vector (any orientation) as int64; non-integral values are refused."""
    values = np.asarray(array)
    if values.dtype == object or not np.issubdtype(values.dtype, np.number):
        raise PersonvlError(f"{path}: {what}: expected a numeric vector, got {values.dtype}")
    flat = values.reshape(-1)
    as_int = flat.astype(np.int64)
    if np.issubdtype(flat.dtype, np.floating) and not np.array_equal(as_int, flat):
        raise PersonvlError(f"{path}: {what}: expected whole numbers")
    return as_int


def matrix(array: Any, path: Path, what: str, columns: int | None = None) -> np.ndarray:
    values = np.asarray(array)
    if values.dtype == object or not np.issubdtype(values.dtype, np.number) or values.ndim != 2:
        raise PersonvlError(f"{path}: {what}: expected a numeric matrix, got {values.dtype} {values.shape}")
    if columns is not None and values.shape[1] != columns:
        raise PersonvlError(f"{path}: {what}: expected {columns} columns, got {values.shape[1]}")
    return values


def struct(value: Any, path: Path, what: str) -> np.void:
    """The one element of a 1x1 MATLAB struct."""
    item = value
    while isinstance(item, np.ndarray) and item.dtype.names is None and item.size == 1:
        item = item.reshape(-1)[0]
    if isinstance(item, np.ndarray) and item.dtype.names is not None and item.size == 1:
        item = item.reshape(-1)[0]
    if not isinstance(item, np.void) or item.dtype.names is None:
        raise PersonvlError(f"{path}: {what}: expected a MATLAB struct")
    return item


def field(record: np.void, name: str, position: int | None, path: Path, what: str) -> Any:
    """A struct field by name, or by position where the peers read it positionally and the
    name differs (files rebuilt by third-party scripts)."""
    names = record.dtype.names or ()
    if name in names:
        return record[name]
    if position is not None and position < len(names):
        return record[position]
    raise PersonvlError(f"{path}: {what}: field {name!r} not found (fields: {', '.join(names) or 'none'})")


def struct_items(value: Any, path: Path, what: str) -> list[np.void]:
    """The elements of a struct array or of a cell array of 1x1 structs, in order."""
    if not isinstance(value, np.ndarray):
        raise PersonvlError(f"{path}: {what}: expected a struct array")
    if value.dtype.names is not None:
        return list(value.reshape(-1))
    return [struct(item, path, f"{what}[{i}]") for i, item in enumerate(value.reshape(-1))]


def one_based_rows(array: Any, count: int, path: Path, what: str) -> np.ndarray:
    """1-based MATLAB indices as 0-based, checked against the number of rows."""
    rows = integers(array, path, what) - 1
    if rows.size and (rows.min() < 0 or rows.max() >= count):
        raise PersonvlError(f"{path}: {what}: index {int(rows.max() + 1 if rows.max() >= count else rows.min() + 1)} "
                            f"is outside 1..{count}")
    return rows
