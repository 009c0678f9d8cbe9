"""Building an index: embed the gallery's new images in batches and commit them in chunks."""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np
from tqdm import tqdm

from personvl.errors import PersonvlError, UsageError
from personvl.index.backends import (BackendConfig, ResolvedBackend, add_in_batches, configure_search,
                                     empty_faiss_index, exact_neighbours, recall_at_k, recall_query_rows,
                                     training_rows)
from personvl.index.encoder import Encoder, describe_reference, load_referenced_model, model_reference
from personvl.index.images import ImageRejected, open_image
from personvl.index.sources import GalleryItem, resolve_source
from personvl.index.store import FORMAT_VERSION, IndexStore

# An ivf index keeps the lists it was trained with when images are added; once the gallery has
# grown this much since training, the lists no longer fit it and are trained again.
IVF_RETRAIN_GROWTH = 2.0


@dataclass
class BuildReport:
    """What a build did; ``recall_at_10`` is None for an exact index."""

    index_dir: str
    source: str
    added: int
    already_indexed: int
    unreadable: list[str]
    total: int
    backend: dict
    recall_at_10: float | None
    recall_queries: int
    seconds: float
    removed_leftovers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"index {self.index_dir}: {self.total} images ({self.added} added, "
                 f"{self.already_indexed} already indexed) from {self.source} in {self.seconds:.1f} s"]
        if self.unreadable:
            shown = ", ".join(self.unreadable[:3]) + (" ..." if len(self.unreadable) > 3 else "")
            lines.append(f"skipped {len(self.unreadable)} unreadable images: {shown}")
        params = " ".join(f"{key}={value}" for key, value in self.backend["params"].items())
        lines.append(f"backend {self.backend['backend']}" + (f" ({params})" if params else ""))
        if self.recall_at_10 is not None:
            lines.append(f"recall@10 of the {self.backend['backend']} index against exact search: "
                         f"{self.recall_at_10:.4f} ({self.recall_queries} gallery images as queries)")
        if self.removed_leftovers:
            lines.append(f"removed {len(self.removed_leftovers)} files left by an interrupted build")
        return "\n".join(lines)


def _backend_from_manifest(values: dict | None) -> BackendConfig:
    return BackendConfig(**values) if values else BackendConfig()


def _decoded_batches(root: Path, items: list[GalleryItem], batch_size: int, encoder: Encoder
                     ) -> Iterator[tuple[list[GalleryItem], list, list[str]]]:
    """(items, image tensors, unreadable paths) per batch; the next batch is decoded in a
    thread while the model runs on the current one."""
    def decode(batch: list[GalleryItem]):
        kept, tensors, unreadable = [], [], []
        for item in batch:
            try:
                tensors.append(encoder.image_tensor(open_image(root / item.path)))
                kept.append(item)
            except (ImageRejected, OSError):
                unreadable.append(item.path)
        return kept, tensors, unreadable

    batches = [items[start:start + batch_size] for start in range(0, len(items), batch_size)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(decode, batches[0]) if batches else None
        for number in range(len(batches)):
            result = pending.result()
            pending = pool.submit(decode, batches[number + 1]) if number + 1 < len(batches) else None
            yield result


def build_index(
    model: str | os.PathLike,
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    dataset: str | None = None,
    split: str | None = None,
    backend: BackendConfig | str | None = None,
    batch_size: int = 32,
    chunk_size: int = 1024,
    progress: bool = True,
    encoder: Encoder | None = None,
) -> BuildReport:
    """Embed the images of ``images`` with ``model`` into the index directory ``out``.

    ``model`` is a saved model directory, or a registered name with its ``weights``; the index
    records it so search can rebuild the encoder. ``images`` is a folder, a JSONL of records,
    or a dataset root when ``dataset`` names its format. Re-running adds images not yet indexed; a build that was
    killed resumes from its last committed chunk. ``backend`` (default: as before, or "auto")
    picks exact search or an approximate ivf / hnsw index, whose recall@10 against exact
    search is measured and reported. ``encoder`` reuses an already loaded model.
    """
    started = time.perf_counter()
    if batch_size < 1 or chunk_size < 1:
        raise UsageError("batch_size and chunk_size must be at least 1")
    if isinstance(backend, str):
        backend = BackendConfig(backend)
    source = resolve_source(images, dataset, split)
    reference = model_reference(model, weights)
    store = IndexStore(out)
    with store.build_lock():
        manifest = store.read_manifest() if store.exists() else None
        if manifest is not None:
            if manifest["model"] != reference:
                raise UsageError(f"{out} was built with model {describe_reference(manifest['model'])}; "
                                 f"embeddings of another model cannot be mixed in (choose a new --out)")
            if manifest["root"] != str(source.root):
                raise UsageError(f"{out} indexes images under {manifest['root']}, not {source.root}")
            backend = backend or _backend_from_manifest(manifest.get("backend_config"))
        else:
            manifest = {"format_version": FORMAT_VERSION, "model": reference, "root": str(source.root),
                        "dim": None, "chunks": [], "ann": None}
        backend = backend or BackendConfig()
        manifest["backend_config"] = asdict(backend)
        removed = store.remove_unlisted_files(manifest if manifest["chunks"] else None)

        known = {row["path"] for entry in manifest["chunks"] for row in store.read_chunk_metadata(entry)}
        already_indexed = sum(item.path in known for item in source.items)
        new_items, seen = [], set(known)
        for item in source.items:
            if item.path not in seen:  # a JSONL may list an image twice
                seen.add(item.path)
                new_items.append(item)
        if not known and not new_items:
            raise PersonvlError(f"no images found in {source.description}")

        unreadable: list[str] = []
        if new_items:
            encoder = encoder or Encoder(load_referenced_model(reference))
            if manifest.get("model_probe") is None:
                manifest["model_probe"] = encoder.probe()
            encoder.check_probe(manifest["model_probe"], reference)
            unreadable = _embed_and_commit(store, manifest, source.root, new_items, encoder,
                                           batch_size, chunk_size, progress)
        total = sum(entry["count"] for entry in manifest["chunks"])
        if total == 0:
            raise PersonvlError(f"none of the {len(unreadable)} images in {source.description} could be read")
        settings = _refresh_ann(store, manifest, backend)
    ann = manifest["ann"]
    return BuildReport(str(out), source.description, len(new_items) - len(unreadable), already_indexed,
                       unreadable, total, settings.to_dict(), ann["recall_at_10"] if ann else None,
                       ann["recall_queries"] if ann else 0, time.perf_counter() - started, removed)


def _embed_and_commit(store: IndexStore, manifest: dict, root: Path, items: list[GalleryItem],
                      encoder: Encoder, batch_size: int, chunk_size: int, progress: bool) -> list[str]:
    unreadable: list[str] = []
    vectors: list[np.ndarray] = []
    metadata: list[dict] = []

    def commit() -> None:
        block = np.concatenate(vectors)
        entry = store.write_chunk(len(manifest["chunks"]), block, metadata)
        manifest["chunks"].append(entry)
        # The manifest names the chunk only after its files are complete on disk.
        store.write_manifest(manifest)
        vectors.clear()
        metadata.clear()

    with tqdm(total=len(items), unit="img", desc="embedding", disable=not progress) as bar:
        for kept, tensors, failed in _decoded_batches(root, items, batch_size, encoder):
            unreadable.extend(failed)
            if kept:
                embeddings = encoder.encode_tensors(tensors)
                if manifest["dim"] is None:
                    manifest["dim"] = int(embeddings.shape[1])
                elif embeddings.shape[1] != manifest["dim"]:
                    raise PersonvlError(f"the model gives {embeddings.shape[1]}-d embeddings, "
                                        f"the index holds {manifest['dim']}-d ones")
                vectors.append(embeddings)
                metadata.extend(item.to_dict() for item in kept)
            bar.update(len(kept) + len(failed))
            if len(metadata) >= chunk_size:
                commit()
        if metadata:
            commit()
    return unreadable


def _reusable(previous: dict | None, settings: ResolvedBackend, total: int, store: IndexStore) -> bool:
    """Whether the stored approximate index can be extended instead of built again."""
    return bool(previous and previous["settings"] == settings.to_dict() and previous["count"] <= total
                and (settings.backend != "ivf" or total <= IVF_RETRAIN_GROWTH * previous["trained_on"])
                and (store.directory / previous["file"]).is_file())


def _gather_rows(blocks: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """The given (sorted) global rows of consecutive ``blocks``, copied into one array."""
    starts = np.cumsum([0] + [len(block) for block in blocks])
    block_of_row = np.searchsorted(starts, rows, side="right") - 1
    return np.stack([blocks[b][row - starts[b]] for b, row in zip(block_of_row, rows)]).astype(np.float32)


def _add_from(index: faiss.Index, blocks: list[np.ndarray], first_row: int) -> None:
    """Add every row from ``first_row`` on, chunk by chunk (the chunks stay memory-mapped)."""
    start = 0
    for block in blocks:
        if start + len(block) > first_row:
            add_in_batches(index, block[max(0, first_row - start):])
        start += len(block)


def _refresh_ann(store: IndexStore, manifest: dict, config: BackendConfig) -> ResolvedBackend:
    """Bring the approximate index up to date with every committed vector, or drop it."""
    previous = manifest.get("ann")
    total = sum(entry["count"] for entry in manifest["chunks"])
    settings = config.resolved(total)
    if not settings.approximate:
        if previous is not None:
            manifest["ann"] = None
            store.write_manifest(manifest)
            store.remove_unlisted_files(manifest)
        return settings
    if (previous and settings.backend == "ivf" == previous["settings"]["backend"] and config.nlist is None
            and config.nprobe is None):
        # The list count chosen for the gallery at training time stays until it is retrained.
        kept = ResolvedBackend("ivf", previous["settings"]["params"], settings.seed)
        if _reusable(previous, kept, total, store):
            settings = kept
    if previous and previous["count"] == total and previous["settings"] == settings.to_dict():
        return settings
    blocks = [store.read_chunk_vectors(entry, mmap=True) for entry in manifest["chunks"]]
    if _reusable(previous, settings, total, store):
        index = faiss.read_index(str(store.directory / previous["file"]))
        _add_from(index, blocks, previous["count"])
        trained_on = previous["trained_on"]
    else:
        training = _gather_rows(blocks, training_rows(total, settings)) if settings.backend == "ivf" else None
        index = empty_faiss_index(manifest["dim"], settings, training)
        _add_from(index, blocks, 0)
        trained_on = total
    configure_search(index, settings)
    queries = _gather_rows(blocks, recall_query_rows(total, seed=settings.seed))
    recall = recall_at_k(index, exact_neighbours(blocks, queries, min(10, total)), queries)
    # A fresh name per write: the manifest must never name a file whose content changed under it.
    name = f"ann-{total}-{uuid.uuid4().hex[:8]}.faiss"
    store.write_faiss_index(name, index)
    manifest["ann"] = {"file": name, "count": total, "trained_on": trained_on, "settings": settings.to_dict(),
                       "recall_at_10": round(recall, 6), "recall_queries": len(queries)}
    store.write_manifest(manifest)
    store.remove_unlisted_files(manifest)
    return settings
