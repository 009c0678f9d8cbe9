"""Embedding a user's own images and descriptions in batches."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from personvl.errors import PersonvlError
from personvl.models.encoder import PersonEncoder
from personvl.models.transforms import open_rgb_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursively), in sorted path order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PersonvlError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise PersonvlError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return paths


# What a damaged image file can raise while it is decoded or transformed (PIL uses all four).
UNREADABLE_IMAGE_ERRORS = (PersonvlError, OSError, ValueError, SyntaxError)


class ImageFiles(Dataset):
    """Decoded, transformed images as ``(index, tensor)``; an unreadable file comes back as
    ``(index, message)``. Raised inside a loader worker, the error would reach the user wrapped
    in the worker's traceback, or end a run that means to list the file and go on."""

    def __init__(self, paths: Sequence[str | os.PathLike], transform):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return index, self.transform(open_rgb_image(self.paths[index]))
        except UNREADABLE_IMAGE_ERRORS as exc:
            return index, str(exc) or type(exc).__name__


def _collate(items: list) -> torch.Tensor:
    for _, item in items:
        if isinstance(item, str):
            raise PersonvlError(item)
    return torch.stack([image for _, image in items])


@contextmanager
def _evaluating(model: PersonEncoder) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def embed_images(model: PersonEncoder, paths: Sequence[str | os.PathLike], *, batch_size: int = 64,
                 workers: int = 0, progress: bool = True, normalize: bool = True) -> np.ndarray:
    """[N, D] float32 L2-normalised embeddings of the image files, in the given order
    (``normalize=False``: the image tower's output as it is)."""
    if batch_size < 1:
        raise PersonvlError(f"batch size must be at least 1, got {batch_size}")
    loader = DataLoader(ImageFiles([Path(p) for p in paths], model.image_transform), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate)
    chunks = []
    with _evaluating(model):
        for batch in tqdm(loader, desc="embedding images", unit="batch", disable=not progress):
            embedded = model.encode_image(batch) if normalize else model.visual(model.preprocess(batch))
            chunks.append(embedded.float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, model.embed_dim), np.float32)


def embed_image_folder(model: PersonEncoder, folder: str | os.PathLike, *, batch_size: int = 64,
                       workers: int = 0, progress: bool = True) -> tuple[list[str], np.ndarray]:
    """Paths relative to ``folder`` (sorted) and their [N, D] embeddings."""
    paths = list_images(folder)
    features = embed_images(model, paths, batch_size=batch_size, workers=workers, progress=progress)
    return [p.relative_to(folder).as_posix() for p in paths], features


def embed_texts(model: PersonEncoder, texts: Sequence[str], *, batch_size: int = 256,
                progress: bool = False) -> np.ndarray:
    """[N, D] float32 L2-normalised embeddings of the texts, in the given order."""
    texts = list(texts)
    chunks = []
    with _evaluating(model):
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="embedding texts", unit="batch", disable=not progress):
            chunks.append(model.encode_text(texts[start:start + batch_size]).float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, model.embed_dim), np.float32)


def save_embeddings(out: str | os.PathLike, features: np.ndarray, names: Sequence[str],
                    names_suffix: str = ".paths.txt") -> tuple[Path, Path]:
    """Write ``out`` (.npy, row i = names[i]) and the names, one a line, beside it
    (``feats.npy`` -> ``feats.paths.txt``)."""
    out = Path(out)
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")
    names_file = out.with_suffix(names_suffix)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, features)
        names_file.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    except OSError as exc:
        raise PersonvlError(f"cannot write {out}: {exc.strerror}") from None
    return out, names_file
