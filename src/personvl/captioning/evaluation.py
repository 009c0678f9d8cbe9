"""How good are pseudo captions: predicted attributes against a synthetic world's ground truth,
and how varied the caption wording is."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from personvl.errors import PersonvlError

# Slot (as the vocabulary's phrase values and the world's `visible` facts name it) -> the
# group that predicts it. Items the world draws only when present default to absent.
EVALUATED_SLOTS = {
    "gender": "gender", "hair_length": "hair_length", "hair_colour": "hair_length",
    "upper_type": "upper_clothes", "upper_colour": "upper_clothes", "lower_type": "lower_clothes",
    "lower_colour": "lower_clothes", "view": "action", "bag": "bag", "hat": "hat", "glasses": "glasses",
    "umbrella": "umbrella", "phone": "cellphone",
}
_ABSENT = {"bag": "none", "hat": "no", "glasses": "no", "umbrella": "no", "phone": "no"}
WORLD_RECORDS = "records.jsonl"
WORLD_FILE = "world.json"


@dataclass(frozen=True)
class SlotAccuracy:
    slot: str
    group: str
    images: int
    accuracy: float            # fraction of images whose predicted value is the true one
    majority: float            # accuracy of always answering the most frequent true value
    majority_value: str


@dataclass
class AttributeEvaluation:
    """Per-slot accuracy of predicted attributes next to the majority-class baseline."""

    slots: list[SlotAccuracy]
    matched: int               # caption records found in the ground truth
    unmatched: int

    @property
    def mean_accuracy(self) -> float:
        return sum(s.accuracy for s in self.slots) / len(self.slots) if self.slots else 0.0

    @property
    def mean_majority(self) -> float:
        return sum(s.majority for s in self.slots) / len(self.slots) if self.slots else 0.0

    def table(self) -> str:
        from personvl.reporting import format_table

        rows = [[s.slot, s.group, s.images, 100 * s.accuracy, 100 * s.majority, s.majority_value] for s in self.slots]
        rows.append(["mean", "", self.matched, 100 * self.mean_accuracy, 100 * self.mean_majority, ""])
        return format_table(["slot", "group", "images", "accuracy %", "majority %", "majority value"], rows)

    def to_dict(self) -> dict[str, Any]:
        return {"slots": [asdict(s) for s in self.slots], "matched": self.matched, "unmatched": self.unmatched,
                "mean_accuracy": self.mean_accuracy, "mean_majority": self.mean_majority}


def read_caption_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a captions JSONL file (without its header line)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PersonvlError(f"cannot read {path}: {exc.strerror}") from None
    entries = [json.loads(line) for line in lines if line.strip()]
    return [e for e in entries if "image" in e]


def find_world(images: str | os.PathLike) -> Path | None:
    """The synthetic world ``images`` lies in (a folder with world.json and records.jsonl at or
    above it), or None."""
    path = Path(images).resolve()
    for folder in (path, *path.parents):
        if (folder / WORLD_FILE).is_file() and (folder / WORLD_RECORDS).is_file():
            return folder
    return None


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def world_ground_truth(world: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Resolved image path -> ground-truth row of a synthetic world."""
    world = Path(world)
    path = world / WORLD_RECORDS
    if not path.is_file():
        raise PersonvlError(f"{world}: no {WORLD_RECORDS}; ground truth needs a synthetic world directory")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {os.path.realpath(world / row["image"]): row for row in rows if "image" in row and "visible" in row}


def _row_finder(truth: dict[str, dict[str, Any]]):
    by_identity = {identity: row for path, row in truth.items() if (identity := _file_identity(path)) is not None}

    def find(image: str) -> dict[str, Any] | None:
        row = truth.get(os.path.realpath(image))
        if row is None:
            identity = _file_identity(image)
            row = by_identity.get(identity) if identity is not None else None
        return row

    return find


def true_value(row: dict[str, Any], slot: str) -> str | None:
    """A world row's true value of ``slot``; None where the camera does not show it."""
    if slot == "view":
        return row.get("view")
    visible = row["visible"]
    if slot in visible:
        return str(visible[slot])
    if slot.startswith("lower_"):
        return None
    return _ABSENT.get(slot)


def evaluate_captions(captions: str | os.PathLike | Sequence[dict[str, Any]],
                      ground_truth: str | os.PathLike) -> AttributeEvaluation:
    """Accuracy of each slot the captions' phrase ``values`` predict, on the images of the
    synthetic world ``ground_truth``, with the majority-class baseline of the same images.

    Records are matched to the world by path, or by file identity (the world's dataset
    layouts hard-link its images)."""
    entries = read_caption_records(captions) if isinstance(captions, (str, os.PathLike)) else list(captions)
    find_row = _row_finder(world_ground_truth(ground_truth))
    pairs = [(entry.get("values", {}), row) for entry in entries if (row := find_row(entry["image"])) is not None]
    slots = []
    for slot, group in EVALUATED_SLOTS.items():
        if not any(slot in values for values, _ in pairs):
            continue   # the vocabulary does not predict it
        # An image whose phrases do not state the slot (a bald head has no hair colour) is wrong.
        judged = [(values.get(slot), true_value(row, slot)) for values, row in pairs]
        judged = [(predicted, true) for predicted, true in judged if true is not None]
        if not judged:
            continue
        truths = Counter(true for _, true in judged)
        majority_value, majority_count = truths.most_common(1)[0]
        correct = sum(predicted == true for predicted, true in judged)
        slots.append(SlotAccuracy(slot, group, len(judged), correct / len(judged), majority_count / len(judged),
                                  majority_value))
    return AttributeEvaluation(slots, len(pairs), len(entries) - len(pairs))


# ----------------------------------------------------------------------------- diversity


@dataclass(frozen=True)
class DiversityReport:
    """How varied a set of captions is. ``distinct_ngrams[n]``: distinct n-grams / all n-grams
    (word level, lower case); ``templates_used``: distinct templates (None where unknown)."""

    captions: int
    distinct_captions: int
    mean_words: float
    distinct_ngrams: dict[int, float] = field(default_factory=dict)
    templates_used: int | None = None
    templates_available: int | None = None


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c in "-'" else " " for c in text.lower()).split()


def caption_diversity(captions: Iterable[str], template_ids: Iterable[int] | None = None,
                      templates_available: int | None = None, orders: Sequence[int] = (1, 2, 3)) -> DiversityReport:
    captions = list(captions)
    tokenized = [_words(c) for c in captions]
    ratios = {}
    for n in orders:
        grams = [tuple(words[i:i + n]) for words in tokenized for i in range(len(words) - n + 1)]
        ratios[n] = len(set(grams)) / len(grams) if grams else 0.0
    mean = sum(len(w) for w in tokenized) / len(tokenized) if tokenized else 0.0
    used = len(set(template_ids)) if template_ids is not None else None
    return DiversityReport(len(captions), len(set(captions)), mean, ratios, used, templates_available)


def diversity_table(reports: dict[str, DiversityReport]) -> str:
    from personvl.reporting import format_table

    orders = sorted({n for r in reports.values() for n in r.distinct_ngrams})
    header = ["captions", "count", "distinct", "mean words", *[f"distinct-{n} %" for n in orders], "templates used"]
    rows = []
    for name, r in reports.items():
        used = "-" if r.templates_used is None else (
            f"{r.templates_used}" + (f" of {r.templates_available}" if r.templates_available else ""))
        rows.append([name, r.captions, r.distinct_captions, r.mean_words,
                     *[100 * r.distinct_ngrams.get(n, 0.0) for n in orders], used])
    return format_table(header, rows)


def compare_diversity(captions: str | os.PathLike | Sequence[dict[str, Any]], ground_truth: str | os.PathLike | None = None,
                      templates_available: int | None = None) -> dict[str, DiversityReport]:
    """Diversity of generated captions, and of the world's human-style captions of the same
    images when ``ground_truth`` is a synthetic world."""
    entries = read_caption_records(captions) if isinstance(captions, (str, os.PathLike)) else list(captions)
    generated = [c for e in entries for c in e.get("captions", [])]
    ids = [i for e in entries for i in e.get("template_ids", [])]
    reports = {"generated": caption_diversity(generated, ids if ids else None, templates_available)}
    if ground_truth is not None:
        find_row = _row_finder(world_ground_truth(ground_truth))
        rows = [find_row(e["image"]) for e in entries]
        human = [c for row in rows if row is not None for c in row.get("captions", [])]
        if human:
            reports["world (human-style)"] = caption_diversity(human)
    return reports
