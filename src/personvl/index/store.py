"""The on-disk index: committed chunks of embeddings and metadata, listed by a manifest.

Layout of an index directory::

    index.json          the manifest: model reference, gallery root, dimension, chunks, ann
    chunks/000000.npy   float32 [n, dim] unit embeddings of one chunk
    chunks/000000.jsonl one metadata line per row: path, pid, camid, captions
    ann-<count>.faiss   the approximate index over the first <count> vectors (ivf / hnsw only)
    .lock               held while a build runs

A chunk exists for readers only once the manifest names it, and the manifest is replaced
atomically (write a temporary file, fsync, rename), so a build killed at any instant leaves
either the old or the new manifest and never a half-written chunk in use. Files a killed build
left behind are not named by the manifest and are removed by the next build.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from personvl.errors import PersonvlError

MANIFEST = "index.json"
FORMAT_VERSION = 1


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename itself must reach the disk before the manifest that relies on it.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class IndexStore:
    """Reads and appends to one index directory."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.chunk_directory = self.directory / "chunks"

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict:
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PersonvlError(f"{self.directory}: not an index (no {MANIFEST}); "
                                f"build one with 'personvl index build'") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise PersonvlError(f"{self.manifest_path}: unreadable manifest ({exc})") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise PersonvlError(f"{self.directory}: index format {manifest.get('format_version')} "
                                f"is not supported (expected {FORMAT_VERSION})")
        return manifest

    def write_manifest(self, manifest: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomically(self.manifest_path, json.dumps(manifest, indent=1).encode("utf-8"))

    @contextmanager
    def build_lock(self) -> Iterator[None]:
        """Exclusive lock for a build; the OS releases it if the process dies."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / ".lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PersonvlError(f"{self.directory}: another build is writing this index") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write_faiss_index(self, name: str, index) -> None:
        import faiss

        temporary = self.directory / f".{name}.tmp"
        faiss.write_index(index, str(temporary))
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, self.directory / name)
        _fsync_directory(self.directory)

    # -- chunks -----------------------------------------------------------------------------

    def chunk_paths(self, name: str) -> tuple[Path, Path]:
        return self.chunk_directory / f"{name}.npy", self.chunk_directory / f"{name}.jsonl"

    def write_chunk(self, number: int, embeddings: np.ndarray, metadata: list[dict]) -> dict:
        """Write one chunk's files (not yet visible to readers) and return its manifest entry."""
        if len(embeddings) != len(metadata):
            raise ValueError("one metadata entry per embedding row")
        self.chunk_directory.mkdir(parents=True, exist_ok=True)
        name = f"{number:06d}"
        vectors_path, metadata_path = self.chunk_paths(name)
        write_atomically(vectors_path, _npy_bytes(np.ascontiguousarray(embeddings, dtype=np.float32)))
        lines = "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in metadata)
        write_atomically(metadata_path, lines.encode("utf-8"))
        return {"name": name, "count": len(metadata)}

    def read_chunk_vectors(self, entry: dict, mmap: bool = False) -> np.ndarray:
        path, _ = self.chunk_paths(entry["name"])
        try:
            vectors = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PersonvlError(f"{path}: unreadable chunk ({exc})") from None
        if vectors.ndim != 2 or len(vectors) != entry["count"]:
            raise PersonvlError(f"{path}: holds {vectors.shape} rows, the manifest says {entry['count']}")
        return vectors

    def read_chunk_metadata(self, entry: dict) -> list[dict]:
        _, path = self.chunk_paths(entry["name"])
        try:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, json.JSONDecodeError) as exc:
            raise PersonvlError(f"{path}: unreadable chunk metadata ({exc})") from None
        if len(rows) != entry["count"]:
            raise PersonvlError(f"{path}: holds {len(rows)} rows, the manifest says {entry['count']}")
        return rows

    def read_all(self, manifest: dict) -> tuple[np.ndarray, list[dict]]:
        """All committed embeddings (one float32 array) and metadata, in id order."""
        chunks = manifest["chunks"]
        total = sum(entry["count"] for entry in chunks)
        vectors = np.empty((total, manifest["dim"]), dtype=np.float32)
        metadata: list[dict] = []
        offset = 0
        for entry in chunks:
            block = self.read_chunk_vectors(entry, mmap=True)
            if block.shape[1] != manifest["dim"]:
                raise PersonvlError(f"chunk {entry['name']} has dimension {block.shape[1]}, "
                                    f"the index {manifest['dim']}")
            vectors[offset:offset + len(block)] = block
            offset += len(block)
            metadata.extend(self.read_chunk_metadata(entry))
        return vectors, metadata

    def remove_unlisted_files(self, manifest: dict | None) -> list[str]:
        """Delete chunk and ann files a killed build left behind; returns their names."""
        listed = set()
        if manifest:
            for entry in manifest["chunks"]:
                listed.update(path.name for path in self.chunk_paths(entry["name"]))
            if manifest.get("ann"):
                listed.add(manifest["ann"]["file"])
        removed = []
        candidates = list(self.chunk_directory.iterdir()) if self.chunk_directory.is_dir() else []
        candidates += list(self.directory.glob("ann-*.faiss")) + list(self.directory.glob(".*.tmp"))
        for path in candidates:
            if path.name not in listed:
                path.unlink()
                removed.append(path.name)
        return sorted(removed)
