"""An append-only JSONL file that survives being killed: whole lines or nothing.

Lines are written whole and flushed, then synced to disk once per batch. Opening an existing
file cuts a trailing partial line (what a kill during a write leaves) and reads back which
images are finished, so a re-run continues without duplicating or losing a line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from personvl.errors import PersonvlError


def read_header(path: str | os.PathLike) -> dict[str, Any] | None:
    """The first line of an existing file written by ``ResumableJsonl``; None when there is no
    file or its first line is not a whole JSON object."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            line = handle.readline()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PersonvlError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _parse_header(line) if line.endswith(b"\n") else None


def _parse_header(line: bytes | str) -> dict[str, Any] | None:
    try:
        header = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


class ResumableJsonl:
    """``header`` is the file's first line; an existing file must start with the same one, and
    its records must agree with ``expect`` (e.g. ``{"method": "dcc"}``). ``finished`` holds the
    ``key`` value of every complete record line."""

    def __init__(self, path: str | os.PathLike, header: dict[str, Any], key: str = "image",
                 expect: dict[str, Any] | None = None):
        self.path = Path(path)
        self.key = key
        self.expect = dict(expect or {})
        self.finished: set[str] = set()
        self.records_before = 0
        self.repaired_bytes = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size > 0:
                self._resume(header)
                self._handle = self.path.open("a", encoding="utf-8")
            else:
                self._handle = self.path.open("w", encoding="utf-8")
                self._handle.write(json.dumps(header, ensure_ascii=False) + "\n")
                self.sync()
        except OSError as exc:
            raise PersonvlError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def _resume(self, header: dict[str, Any]) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            # A kill in the middle of a line: that record was never finished.
            with self.path.open("r+b") as handle:
                handle.truncate(end)
                handle.flush()
                os.fsync(handle.fileno())
            self.repaired_bytes = len(data) - end
        lines = data[:end].decode("utf-8").splitlines()
        existing = _parse_header(lines[0]) if lines else None
        if existing != header:
            raise PersonvlError(f"{self.path} was written with another vocabulary, prompts, method or calibration (its "
                                "first line differs); choose another output file or remove it")
        for number, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PersonvlError(f"{self.path}: line {number} is not JSON ({exc.msg}); the file was changed "
                                    "by something other than this writer") from None
            differs = next((k for k, v in self.expect.items() if entry.get(k) != v), None)
            if differs is not None:
                raise PersonvlError(f"{self.path}: line {number} has {differs} {entry.get(differs)!r}, not "
                                    f"{self.expect[differs]!r}; choose another output file or remove it")
            self.finished.add(entry[self.key])
            self.records_before += 1

    def write(self, entries: Iterable[dict[str, Any]]) -> int:
        """Append the entries (one line each) and sync; returns how many were written."""
        count = 0
        try:
            for entry in entries:
                self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
                self._handle.flush()
                self.finished.add(entry[self.key])
                count += 1
            self.sync()
        except OSError as exc:
            raise PersonvlError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        return count

    def sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            self.sync()
            self._handle.close()

    def __enter__(self) -> "ResumableJsonl":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
