"""What every dataset reader shares: the format description, locating the files a release
should hold, and reading JSON, JSONL and list files with errors that name the file and the
position of the fault."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from personvl.data.records import PersonRecord, RecordTable
from personvl.errors import PersonvlError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass
class SplitContents:
    """What a reader returns for one split; ``annotation`` is the file the records were listed
    in (named when images it lists are missing)."""

    records: list[PersonRecord] | RecordTable
    attribute_names: list[str] | None = None
    part_names: list[str] | None = None
    annotation: str | None = None


@dataclass(frozen=True)
class DatasetFormat:
    """A named on-disk layout and its reader ``read(root, split, **options) -> SplitContents``.

    ``discover_splits(root, **options)`` lists the splits found on disk for formats whose
    splits depend on the data (a JSONL index, a folder tree, RAPv1 without val); the others
    have the fixed ``splits``.
    """

    name: str
    read: Callable[..., SplitContents]
    splits: tuple[str, ...]
    summary: str
    discover_splits: Callable[..., tuple[str, ...]] | None = None

    def splits_of(self, root: Path, **options: Any) -> tuple[str, ...]:
        return self.discover_splits(root, **options) if self.discover_splits is not None else self.splits


# ----------------------------------------------------------------------------- locating files


def require_directory(path: Path, expected: str) -> Path:
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "not found"
        raise PersonvlError(f"{path}: {what}; expected {expected}")
    return path


def find_file(root: Path, candidates: Sequence[str], expected: str) -> Path:
    """The first of ``candidates`` (relative to ``root``) that is a file."""
    for candidate in candidates:
        if (root / candidate).is_file():
            return root / candidate
    names = " or ".join(candidates)
    raise PersonvlError(f"{root}: {names} not found; expected {expected}")


def find_directory(root: Path, candidates: Sequence[str], expected: str) -> Path:
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    names = " or ".join(f"{c}/" for c in candidates)
    raise PersonvlError(f"{root}: {names} not found; expected {expected}")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted (anything else, e.g. Thumbs.db, is ignored)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def image_mask_records(ids: Sequence[str], image_folder: Path, image_suffix: str, mask_folder: Path | None,
                       split: str) -> list[PersonRecord]:
    """Parsing sets: ``<id><image_suffix>`` with the index PNG ``<id>.png`` beside it in
    ``mask_folder`` (None where a split has no annotation)."""
    images = absolute(image_folder) + "/"
    masks = absolute(mask_folder) + "/" if mask_folder is not None else None
    return [PersonRecord(f"{images}{i}{image_suffix}", mask_path=f"{masks}{i}.png" if masks else None, split=split)
            for i in ids]


def parse_file_name(pattern: re.Pattern[str], path: Path) -> re.Match[str]:
    match = pattern.search(path.name)
    if match is None:
        raise PersonvlError(f"{path}: file name does not match the dataset's naming pattern {pattern.pattern!r}")
    return match


# ----------------------------------------------------------------------------- text files


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty lines with their 1-based numbers; CRLF and trailing blanks are removed."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PersonvlError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_id_list(path: Path) -> list[str]:
    """One id per line (LIP's and PASCAL's ``<split>_id.txt``)."""
    ids = []
    for number, line in read_lines(path):
        if len(line.split()) != 1:
            raise PersonvlError(f"{path}: line {number}: expected one image id, got {line!r}")
        ids.append(line)
    return ids


_JSON_CHUNK = 1 << 24  # characters read at a time while streaming a JSON list
_MAX_RECORD_CHARS = 1 << 24  # no annotation record is longer; beyond it a parse error is real


def iter_json_list(path: Path) -> Iterator[Any]:
    """Yield the elements of a file holding one JSON list, keeping only a chunk of the text in
    memory, so that a list of millions of records never exists twice (text and objects)."""
    decoder = json.JSONDecoder()
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise PersonvlError(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        stream = _JsonListStream(path, handle)
        stream.skip_whitespace()
        if stream.peek() != "[":
            raise stream.error("expected a JSON list of records", index=None)
        stream.pos += 1
        index = 0
        while True:
            stream.skip_whitespace()
            if index == 0 and stream.peek() == "]":
                break
            yield stream.decode(decoder, index)
            index += 1
            stream.skip_whitespace()
            separator = stream.peek()
            if separator == "]":
                stream.pos += 1
                break
            if separator != ",":
                raise stream.error("the file ends before the list is closed" if separator == ""
                                   else f"expected ',' or ']' after record {index - 1}", index=None)
            stream.pos += 1
        stream.skip_whitespace()
        if stream.peek() != "":
            raise stream.error("extra data after the closing ']'", index=None)


class _JsonListStream:
    """A window on the file text; ``consumed_*`` locate the window for error messages."""

    def __init__(self, path: Path, handle) -> None:
        self.path = path
        self.handle = handle
        self.buffer = ""
        self.pos = 0
        self.eof = False
        self.consumed_lines = 0
        self.consumed_columns = 0  # characters consumed since the last consumed newline
        self.refill()

    def refill(self) -> None:
        if self.eof:
            return
        dropped = self.buffer[: self.pos]
        newlines = dropped.count("\n")
        self.consumed_lines += newlines
        self.consumed_columns = len(dropped) - dropped.rfind("\n") - 1 if newlines else self.consumed_columns + len(dropped)
        try:
            chunk = self.handle.read(_JSON_CHUNK)
        except UnicodeDecodeError as exc:
            raise PersonvlError(f"{self.path}: not UTF-8 text ({exc.reason})") from None
        self.buffer = self.buffer[self.pos:] + chunk
        self.pos = 0
        self.eof = not chunk

    def skip_whitespace(self) -> None:
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer) or self.eof:
                return
            self.refill()

    def peek(self) -> str:
        return self.buffer[self.pos] if self.pos < len(self.buffer) else ""

    def decode(self, decoder: json.JSONDecoder, index: int) -> Any:
        while True:
            try:
                value, end = decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                # A record cut by the window's end fails within its last record; an error with
                # more text after it than any record holds is a malformed record, not a cut one.
                if not self.eof and len(self.buffer) - exc.pos < _MAX_RECORD_CHARS:
                    self.refill()
                    continue
                self.pos = exc.pos
                raise self.error(exc.msg, index) from None
            if end < len(self.buffer) or self.eof:
                self.pos = end
                return value
            self.refill()  # a number at the very end may continue in the next chunk

    def error(self, message: str, index: int | None) -> PersonvlError:
        line_start = self.buffer.rfind("\n", 0, self.pos)
        line = self.consumed_lines + self.buffer.count("\n", 0, self.pos) + 1
        column = self.pos - line_start if line_start >= 0 else self.consumed_columns + self.pos + 1
        where = f"line {line} column {column}" + (f" (record {index})" if index is not None else "")
        return PersonvlError(f"{self.path}: malformed JSON at {where}: {message}")


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-empty line of a JSONL file."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise PersonvlError(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        number = 0
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise PersonvlError(f"{path}: malformed JSON at line {number} column {exc.colno}: {exc.msg}") from None
                if not isinstance(value, dict):
                    raise PersonvlError(f"{path}: line {number}: expected a JSON object, got {type(value).__name__}")
                yield number, value
        except UnicodeDecodeError as exc:
            raise PersonvlError(f"{path}: not UTF-8 text (line {number + 1}: {exc.reason})") from None


def require_record(value: Any, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PersonvlError(f"{path}: {where}: expected a JSON object, got {type(value).__name__}")
    return value


def require_key(entry: dict[str, Any], key: str, path: Path, where: str, kind: type | tuple[type, ...] | None = None) -> Any:
    """``entry[key]``, or an error naming the file, the record and the key."""
    if key not in entry:
        raise PersonvlError(f"{path}: {where}: missing key {key!r}")
    value = entry[key]
    if kind is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise PersonvlError(f"{path}: {where}: {key!r} should be {names}, got {value!r:.60}")
    return value


def string_list(value: Any, path: Path, where: str, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PersonvlError(f"{path}: {where}: {key!r} should be a list of strings")
    return value


def absolute(path: Path) -> str:
    """Absolute path text without resolving links (a linked dataset keeps its own names)."""
    return os.path.abspath(path)
