"""``caption_images``: pseudo captions and attributes for unlabeled person images.

Divide (the vocabulary's groups), conquer (``AttributeScorer``), combine (templates); the
result is a resumable JSONL index in the ``jsonl`` dataset schema.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from personvl.captioning.compose import (
    UNKNOWN, synth_pedes_attributes, synth_pedes_caption, write_captions)
from personvl.captioning.grammar import load_templates
from personvl.captioning.scoring import DEFAULT_THRESHOLD, AttributeScorer, Choice
from personvl.captioning.vocabulary import Vocabulary, load_vocabulary
from personvl.captioning.writer import ResumableJsonl, read_header
from personvl.errors import PersonvlError, UsageError
from personvl.models.embedding import ImageFiles

METHODS = ("dcc", "attributes", "synth-pedes")
_GRAMMARS = {"dcc": "dcc", "synth-pedes": "synth_pedes"}


@dataclass
class CaptionRun:
    """What one ``caption_images`` call did."""

    path: Path
    failures_path: Path
    method: str
    images: int           # distinct images asked for
    written: int          # records added by this call
    already_done: int     # images skipped because an earlier run finished them
    failed: int           # unreadable images (listed in failures_path)
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (f"{self.method} captions for {self.images} images -> {self.path}: {self.written} written, "
                f"{self.already_done} already done, {self.failed} unreadable")
        if self.failed:
            text += f" (listed in {self.failures_path})"
        return text + f"; {self.seconds:.1f} s ({self.images_per_second:.1f} images/s)"


def failures_path_of(out: str | os.PathLike) -> Path:
    """``captions.jsonl`` -> ``captions.failed.txt``: one ``path<TAB>reason`` line per image."""
    out = Path(out)
    return out.with_name(out.stem + ".failed.txt")


def list_image_paths(images: str | os.PathLike | Sequence[str | os.PathLike], *, dataset: str | None = None,
                     split: str | None = None) -> list[str]:
    """Absolute image paths, without repeats, of a folder (recursive, sorted), a ``.jsonl``
    index, a dataset root read as ``dataset``, or a list of paths."""
    if not isinstance(images, (str, os.PathLike)):
        paths = [os.path.abspath(p) for p in images]
    else:
        from personvl.data import load_dataset
        from personvl.data.formats.user import ALL, walk_images

        root = Path(images)
        if dataset is not None:
            paths = [r.image_path for r in load_dataset(dataset, root, split, check_images=False)]
        elif root.is_file() and root.suffix.lower() == ".jsonl":
            paths = [r.image_path for r in load_dataset("jsonl", root, split or ALL, check_images=False)]
        elif root.is_dir():
            if split is not None:
                raise UsageError("a split applies to a dataset or a .jsonl index, not to a folder of images")
            paths = walk_images(root)
        elif not root.exists():
            raise PersonvlError(f"{images}: no such file or directory")
        else:
            raise UsageError(f"{images}: expected a folder of images, a .jsonl index or a dataset root (with a dataset name)")
    return list(dict.fromkeys(os.path.abspath(p) for p in paths))


def _collate(items):
    good = [(i, x) for i, x in items if not isinstance(x, str)]
    bad = [(i, x) for i, x in items if isinstance(x, str)]
    batch = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], batch, bad


def _image_loader(paths: list[str], transform, batch_size: int, workers: int) -> DataLoader:
    """Batches of (indices into ``paths``, stacked images or None, [(index, error message)])."""
    return DataLoader(ImageFiles(paths, transform), batch_size=batch_size, num_workers=workers, collate_fn=_collate)


def _resolve_model(model, weights, tokenizer, device):
    if isinstance(model, torch.nn.Module):
        if weights is not None:
            raise UsageError("weights apply to a model name or folder, not to a model object")
        return model.to(device) if device is not None else model
    from personvl.models import open_model

    return open_model(model, weights, tokenizer=tokenizer, device=device)


def _image_rng(seed: int, path: str) -> np.random.Generator:
    # Seeded by the path, so a resumed run writes what an uninterrupted one would have.
    return np.random.default_rng([seed, zlib.crc32(path.encode("utf-8"))])


def _values(choices: Sequence[Choice], scorer: AttributeScorer) -> dict[str, str]:
    """Slot facts of the chosen phrases; a silent optional group states its absent phrase's."""
    values: dict[str, str] = {}
    for choice, group in zip(choices, scorer.groups):
        phrase = choice.phrase if choice.phrase is not None else group.absent_phrase
        if phrase is not None:
            values.update(phrase.values)
    return values


class _EntryBuilder:
    """One JSONL record per image, per method."""

    def __init__(self, method: str, scorer: AttributeScorer, templates: tuple[str, ...], count: int, seed: int):
        self.method = method
        self.scorer = scorer
        self.templates = templates
        self.template_ids = {t: i for i, t in enumerate(templates)}
        self.count = count
        self.seed = seed
        self.caption_groups = {g.name for g in scorer.vocabulary.groups}

    def __call__(self, path: str, choices: list[Choice], probabilities: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
        rng = _image_rng(self.seed, path)
        caption_choices = [c for c in choices if c.group in self.caption_groups]
        kept = [c for c in caption_choices if c.phrase is not None and not c.phrase.absent]
        entry: dict[str, Any] = {"image": path, "method": self.method, "captions": []}
        if self.method == "dcc":
            captions = write_captions(caption_choices, self.templates, rng, self.count)
            entry["captions"] = [c.text for c in captions]
            entry["attribute_phrases"] = list(dict.fromkeys(w for c in captions for w in c.words))
            entry["template_ids"] = [self.template_ids[c.template] for c in captions]
        elif self.method == "synth-pedes":
            attribute_string = synth_pedes_attributes(choices)
            written: dict[str, str] = {}
            for _ in range(self.count * 10):
                text, template = synth_pedes_caption(attribute_string, self.templates, rng)
                written.setdefault(text, template)
                if len(written) == self.count:
                    break
            entry["captions"] = list(written)
            entry["attribute_phrases"] = [s for s in attribute_string.split(",") if s != UNKNOWN]
            entry["attribute_string"] = attribute_string
            entry["template_ids"] = [self.template_ids[t] for t in written.values()]
        else:
            entry["attribute_phrases"] = [c.phrase.key for c in kept]
        entry["attributes"] = self.scorer.attribute_vector(caption_choices)
        entry["phrases"] = {c.group: c.phrase.key for c in choices if c.phrase is not None and not c.phrase.absent}
        entry["values"] = _values(choices, self.scorer)
        if self.method == "attributes":
            entry["scores"] = [round(float(s), 4) for s in scores]
        else:
            entry["scores"] = {c.group: round(c.probability, 4) for c in choices if c.phrase is not None}
        return entry


def caption_images(images: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike, *,
                   model, weights=None, method: str = "dcc", vocabulary: str | os.PathLike | Vocabulary | None = None,
                   templates: str | os.PathLike | None = None, threshold: float = DEFAULT_THRESHOLD,
                   logit_scale: float | None = None, captions_per_image: int = 2, batch_size: int = 64,
                   workers: int = 2, seed: int = 0, calibration_images: int = 0,
                   prompts: Sequence[str] | None = None, dataset: str | None = None, split: str | None = None,
                   tokenizer: str | os.PathLike | None = None, device: str | torch.device | None = None,
                   progress: bool = True) -> CaptionRun:
    """Caption (``dcc``, ``synth-pedes``) or label (``attributes``) every image of ``images``
    into the JSONL file ``out``; any captions the images already have are ignored.

    ``images``: a folder (recursive), a ``.jsonl`` index, a dataset root with ``dataset=``
    (and ``split=``), or a list of paths. ``model``: a ``PersonEncoder``, a saved model
    folder, or a registered name with ``weights`` (a CLIP file, a personvl model folder ...).
    ``vocabulary`` / ``templates``: YAML files replacing the shipped ones. ``prompts``: scoring
    prompt templates ("A person {phrase}.") replacing the vocabulary's; they should read like
    the text the model learned from, and are stored in the file's first line. Optional groups
    speak only above ``threshold``. ``calibration_images`` > 0 first centres each required
    phrase's score on that many of the images (a sample drawn with ``seed``); the offsets are
    stored in the file's first line, and a resumed run uses them as they are. Re-running with
    the same ``out`` skips finished images; unreadable images are listed in
    ``<out stem>.failed.txt`` and retried by the next run.
    """
    if method not in METHODS:
        raise UsageError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if batch_size < 1 or workers < 0 or captions_per_image < 1 or calibration_images < 0:
        raise UsageError("batch_size and captions_per_image must be at least 1, workers and calibration_images "
                         "at least 0")
    started = time.perf_counter()
    paths = list_image_paths(images, dataset=dataset, split=split)
    vocabulary = vocabulary if isinstance(vocabulary, Vocabulary) else load_vocabulary(vocabulary)
    template_list = load_templates(_GRAMMARS[method], templates) if method in _GRAMMARS else ()
    encoder = _resolve_model(model, weights, tokenizer, device)
    was_training = encoder.training
    encoder.eval()
    try:
        scorer = AttributeScorer(encoder, vocabulary, threshold=threshold, logit_scale=logit_scale,
                                 extra=method == "synth-pedes", prompts=prompts)
        build = _EntryBuilder(method, scorer, template_list, captions_per_image, seed)
        out = Path(out)
        failures_path = failures_path_of(out)
        header: dict[str, Any] = {"attribute_names": scorer.attribute_names,
                                  "prompts": list(scorer.prompt_templates)}
        if calibration_images:
            header["calibration"] = _calibration(scorer, paths, out, calibration_images, seed, batch_size, workers,
                                                 progress)
        written = failed = 0
        with ResumableJsonl(out, header, expect={"method": method}) as writer, \
                _open_failures(failures_path) as failures:
            todo = [p for p in paths if p not in writer.finished]
            loader = _image_loader(todo, encoder.image_transform, batch_size, workers)
            device_of_model = encoder.device
            with tqdm(total=len(todo), desc=f"captioning ({method})", unit="image", disable=not progress) as bar:
                for indices, batch, unreadable in (loader if todo else ()):
                    for index, message in unreadable:
                        failures.write(f"{todo[index]}\t{' '.join(message.split())}\n")
                        failures.flush()
                    failed += len(unreadable)
                    if batch is not None:
                        probabilities = scorer.probabilities(batch.to(device_of_model))
                        choices = scorer.choose(probabilities)
                        scores = scorer.attribute_scores(probabilities)
                        written += writer.write(build(todo[i], c, p, s)
                                                for i, c, p, s in zip(indices, choices, probabilities, scores))
                    bar.update(len(indices) + len(unreadable))
        if not failed:
            failures_path.unlink(missing_ok=True)
    finally:
        encoder.train(was_training)
    return CaptionRun(out, failures_path, method, len(paths), written, len(paths) - len(todo), failed,
                      time.perf_counter() - started)


def _calibration(scorer: AttributeScorer, paths: list[str], out: Path, images: int, seed: int, batch_size: int,
                 workers: int, progress: bool) -> dict[str, Any]:
    """Turns on ``scorer``'s calibration and returns what the output's first line records of
    it: the offsets stored there by an earlier run with the same request, else new ones
    estimated on a seeded sample of ``paths``."""
    keys = [f"{p.group}/{p.key}" for p in scorer.phrases]
    existing = read_header(out)
    if existing is not None:
        earlier = existing.get("calibration")
        if not (isinstance(earlier, dict) and earlier.get("images") == images and earlier.get("seed") == seed
                and isinstance(earlier.get("offsets"), dict) and set(earlier["offsets"]) == set(keys)):
            raise PersonvlError(f"{out} was written without calibration, or with another one, vocabulary or "
                                "seed (its first line differs); choose another output file or remove it")
        scorer.calibrate(np.array([earlier["offsets"][k] for k in keys], np.float32))
        return earlier
    rng = np.random.default_rng(seed)
    sample = [paths[i] for i in sorted(rng.choice(len(paths), size=min(images, len(paths)), replace=False))]
    loader = _image_loader(sample, scorer.model.image_transform, batch_size, workers)
    device = scorer.model.device
    with tqdm(total=len(sample), desc="calibrating", unit="image", disable=not progress) as bar:
        def batches():
            for indices, batch, unreadable in loader:
                bar.update(len(indices) + len(unreadable))
                if batch is not None:
                    yield batch.to(device)

        offsets = scorer.estimate_offsets(batches())
    # Rounded before use, so that a resumed run, which reads them back, scores the same.
    rounded = {key: round(float(value), 5) for key, value in zip(keys, offsets)}
    scorer.calibrate(np.array([rounded[k] for k in keys], np.float32))
    return {"images": images, "seed": seed, "offsets": rounded}


def _open_failures(path: Path):
    # Rewritten by every run: failed images are retried, so the list is the latest run's.
    try:
        return path.open("w", encoding="utf-8")
    except OSError as exc:
        raise PersonvlError(f"cannot write {path}: {exc.strerror or exc}") from None
