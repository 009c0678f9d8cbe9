"""Searching an index by a description, an image, or an image already in the gallery."""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np
from PIL import Image

from personvl.errors import PersonvlError, UsageError
from personvl.index.backends import ResolvedBackend, add_in_batches, configure_search
from personvl.index.encoder import Encoder, describe_reference, load_referenced_model
from personvl.index.images import DEFAULT_MAX_PIXELS, open_image
from personvl.index.store import IndexStore


@dataclass
class SearchHit:
    """One result: the image's id in the index, its similarity and what is known about it."""

    id: int
    score: float
    path: str  # absolute path of the image
    relative_path: str  # path under the gallery root
    pid: int | None = None
    camid: int | None = None
    captions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"id": self.id, "score": round(self.score, 6), "path": self.relative_path, "pid": self.pid,
                "camid": self.camid, "captions": list(self.captions)}


class GalleryIndex:
    """A built index, ready to answer queries.

    Embeddings stay memory-mapped in their chunk files; the faiss index holds the searchable
    copy. The model is loaded on first use (text and image queries need it, ``search_similar``
    does not) unless an ``encoder`` is given.
    """

    def __init__(self, directory: str | os.PathLike, encoder: Encoder | None = None, exact: bool = False) -> None:
        self.store = IndexStore(directory)
        self.manifest = self.store.read_manifest()
        if not self.manifest["chunks"]:
            raise PersonvlError(f"{directory}: the index holds no images yet")
        self.root = Path(self.manifest["root"])
        self._blocks = [self.store.read_chunk_vectors(entry, mmap=True) for entry in self.manifest["chunks"]]
        self._block_starts = list(np.cumsum([0] + [len(block) for block in self._blocks[:-1]]))
        self.metadata: list[dict] = []
        for entry in self.manifest["chunks"]:
            self.metadata.extend(self.store.read_chunk_metadata(entry))
        self._encoder = None
        if encoder is not None:
            self._adopt(encoder)
        self.faiss_index, self.backend = self._searchable_index(exact)

    def _searchable_index(self, exact: bool) -> tuple[faiss.Index, ResolvedBackend]:
        ann = self.manifest.get("ann")
        if ann and not exact:
            settings = ResolvedBackend(ann["settings"]["backend"], ann["settings"]["params"], ann["settings"]["seed"])
            index = faiss.read_index(str(self.store.directory / ann["file"]))
            configure_search(index, settings)
            covered = ann["count"]
        else:
            settings = ResolvedBackend("exact")
            index = faiss.IndexFlatIP(self.dim)
            covered = 0
        # Chunks committed after the approximate index was written (a build stopped between
        # the two) are added here in memory; the next build stores them.
        for start, block in zip(self._block_starts, self._blocks):
            if start + len(block) > covered:
                add_in_batches(index, block[max(0, covered - start):])
        return index, settings

    # -- what the index is ------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.metadata)

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def model_reference(self) -> dict:
        return self.manifest["model"]

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            model = load_referenced_model(self.model_reference)
            predictor = None
            if "path" in self.model_reference:
                from personvl.tasks.attributes import load_attribute_predictor

                predictor = load_attribute_predictor(self.model_reference["path"], encoder=model)
            self._adopt(Encoder(model, predictor))
        return self._encoder

    def _adopt(self, encoder: Encoder) -> None:
        encoder.check_probe(self.manifest.get("model_probe"), self.model_reference)
        self._encoder = encoder

    def describe(self) -> dict:
        ann = self.manifest.get("ann")
        return {"images": self.size, "dim": self.dim, "model": describe_reference(self.model_reference),
                "backend": self.backend.backend, "params": self.backend.params,
                "recall_at_10": ann["recall_at_10"] if ann and self.backend.approximate else None}

    def vector(self, image_id: int) -> np.ndarray:
        self._check_id(image_id)
        block = bisect.bisect_right(self._block_starts, image_id) - 1
        return np.asarray(self._blocks[block][image_id - self._block_starts[block]], dtype=np.float32)

    def image_path(self, image_id: int) -> Path:
        """The file of an indexed image, refused if it (or a link on the way) leads outside the root."""
        self._check_id(image_id)
        path = (self.root / self.metadata[image_id]["path"]).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise PersonvlError(f"image {image_id} resolves outside the gallery root")
        return path

    def _check_id(self, image_id: int) -> None:
        if not 0 <= image_id < self.size:
            raise UsageError(f"no image with id {image_id} (the index holds ids 0..{self.size - 1})")

    # -- queries ----------------------------------------------------------------------------

    def search_vectors(self, queries: np.ndarray, k: int = 10) -> list[list[SearchHit]]:
        """The ``k`` nearest images for each row of ``queries`` (unit vectors), best first."""
        if k < 1:
            raise UsageError(f"k must be at least 1, got {k}")
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise UsageError(f"queries have dimension {queries.shape[1]}, the index {self.dim}")
        scores, ids = self.faiss_index.search(queries, min(k, self.size))
        return [[self._hit(int(i), float(s)) for s, i in zip(row_scores, row_ids) if i >= 0]
                for row_scores, row_ids in zip(scores, ids)]

    def _hit(self, image_id: int, score: float) -> SearchHit:
        row = self.metadata[image_id]
        return SearchHit(image_id, score, str(self.root / row["path"]), row["path"], row.get("pid"),
                         row.get("camid"), list(row.get("captions") or []))

    def search_text(self, text: str, k: int = 10) -> list[SearchHit]:
        """Images that match a description, e.g. "a woman in a red coat with a black backpack"."""
        if not text.strip():
            raise UsageError("the description is empty")
        return self.search_vectors(self.encoder.encode_texts([text]), k)[0]

    def search_texts(self, texts: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        return self.search_vectors(self.encoder.encode_texts(list(texts)), k)

    def search_image(self, image: str | os.PathLike | bytes | Image.Image, k: int = 10,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> list[SearchHit]:
        """Images that look like ``image`` (a path, the bytes of a file, or a PIL image)."""
        if not isinstance(image, Image.Image):
            image = open_image(image, max_pixels)
        return self.search_vectors(self.encoder.encode_images([image.convert("RGB")]), k)[0]

    def search_similar(self, image_id: int, k: int = 10) -> list[SearchHit]:
        """Images like the indexed image ``image_id`` (its stored embedding is the query)."""
        return self.search_vectors(self.vector(image_id)[None], k)[0]


def open_index(directory: str | os.PathLike, encoder: Encoder | None = None, exact: bool = False) -> GalleryIndex:
    """Open a built index; ``exact`` ignores an approximate index and scans every vector."""
    return GalleryIndex(directory, encoder, exact)


def search_index(directory: str | os.PathLike, text: str | None = None,
                 image: str | os.PathLike | None = None, k: int = 10) -> list[SearchHit]:
    """One query against an index directory: exactly one of ``text`` or ``image``."""
    if (text is None) == (image is None):
        raise UsageError("give exactly one of a text or an image query")
    index = open_index(directory)
    return index.search_text(text, k) if text is not None else index.search_image(image, k)
