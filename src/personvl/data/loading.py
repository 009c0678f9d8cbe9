"""``load_dataset``: any registered dataset format, one split, as PersonRecords; and the
statistics and conversions built on it (``personvl data stats`` / ``personvl data convert``).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from personvl.data.formats import DatasetFormat, get_format
from personvl.data.formats.user import ALL, write_jsonl
from personvl.data.records import DatasetSplit, PersonRecord, RecordTable, relabel_identities
from personvl.errors import PersonvlError, UsageError

logger = logging.getLogger("personvl.data")

MISSING_SHOWN = 5  # missing paths named in the error; the count covers the rest


def load_dataset(name: str, root: str | os.PathLike, split: str | None = None, *, skip_missing: bool = False,
                 check_images: bool = True, relabel: bool = False, **options: Any) -> DatasetSplit:
    """Read one split of dataset ``name`` from ``root`` (the folder its release unpacks to).

    ``split`` defaults to the format's first split (``train`` for most sets). Every image and
    part mask is checked to exist: a missing one is an error listing the first few and the
    count, unless ``skip_missing`` (the records are left out with a warning; the count is in
    ``.missing_images``). ``check_images=False`` trusts the annotation (an index of millions
    of images on slow storage). ``relabel`` maps the split's identities to 0..N-1 in the order
    of the original numbers, keeping the mapping in ``.identity_mapping``. ``options`` are the
    format's own (``include_val=False`` for msmt17, ``variant="labeled"`` for cuhk03 ...).
    """
    dataset_format = get_format(name)
    root_path = _existing_root(dataset_format, root)
    _check_options(dataset_format, options)
    if split is None:
        split = dataset_format.splits[0]
    if dataset_format.discover_splits is None and split not in dataset_format.splits:
        raise UsageError(f"{name} has splits {', '.join(dataset_format.splits)}; got {split!r}")
    with _collector_paused():
        contents = dataset_format.read(root_path, split, **options)
    records = contents.records
    missing_count = 0
    if check_images:
        missing = find_missing_files(records)
        if missing:
            gone = {index for index, _ in missing}
            missing_count = len(gone)
            shown = ", ".join(path for _, path in missing[:MISSING_SHOWN])
            source = contents.annotation or str(root_path)
            message = f"{len(missing)} file(s) listed by {source} ({split}) are missing, e.g. {shown}"
            if not skip_missing:
                raise PersonvlError(f"{message}; pass skip_missing=True (--skip-missing) to leave them out")
            logger.warning("%s; left out %d record(s)", message, missing_count)
            records = [r for i, r in enumerate(records) if i not in gone]
    mapping = None
    if relabel and isinstance(records, RecordTable):
        mapping = {pid: label for label, pid in enumerate(sorted(set(records.pids)))}
        records = records.with_pids(mapping)
    elif relabel:
        try:
            records, mapping = relabel_identities(records, sort=True)
        except ValueError as exc:
            raise UsageError(f"{name} {split}: cannot relabel ({exc})") from None
    return DatasetSplit(records, dataset=name, split=split, root=str(root_path), attribute_names=contents.attribute_names,
                        part_names=contents.part_names, identity_mapping=mapping, missing_images=missing_count)


@contextlib.contextmanager
def _collector_paused():
    """Reading creates millions of lists and dicts and frees none: the cyclic collector would
    rescan them all again and again (a third of the time of a million-record index)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def dataset_splits(name: str, root: str | os.PathLike, **options: Any) -> tuple[str, ...]:
    """The splits ``name`` has at ``root`` (fixed for most formats, found on disk for some)."""
    dataset_format = get_format(name)
    _check_options(dataset_format, options)
    return dataset_format.splits_of(_existing_root(dataset_format, root), **options)


def _existing_root(dataset_format: DatasetFormat, root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise PersonvlError(f"{path}: not found; expected the {dataset_format.name} dataset ({dataset_format.summary})")
    return path


def _check_options(dataset_format: DatasetFormat, options: dict[str, Any]) -> None:
    parameters = inspect.signature(dataset_format.read).parameters
    accepted = [p for p in list(parameters)[2:] if parameters[p].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        hint = f"its options: {', '.join(accepted)}" if accepted else "it takes no options"
        raise UsageError(f"{dataset_format.name} has no option {unknown[0]!r} ({hint})")


def find_missing_files(records: Iterable[PersonRecord]) -> list[tuple[int, str]]:
    """(record index, path) for each image or mask that is not on disk.

    One directory listing per folder instead of a stat per file: a million images in a few
    thousand folders cost a few thousand system calls.
    """
    listings: dict[str, frozenset[str]] = {}
    missing = []
    for index, record in enumerate(records):
        for path in (record.image_path, record.mask_path):
            if path is None:
                continue
            folder, file_name = os.path.split(path)
            names = listings.get(folder)
            if names is None:
                try:
                    names = frozenset(os.listdir(folder))
                except OSError:
                    names = frozenset()
                listings[folder] = names
            if file_name not in names:
                missing.append((index, path))
    return missing


# ----------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class SplitStatistics:
    split: str
    images: int
    identities: int
    cameras: int
    captions: int
    attributes: int   # entries of the attribute vector (0: the set has none)
    missing_images: int = 0


def split_statistics(dataset: DatasetSplit) -> SplitStatistics:
    """Counts of one split; identities include the labelled boxes of scene frames."""
    identities = {r.pid for r in dataset if r.pid is not None}
    for record in dataset:
        if record.box_pids:
            identities.update(p for p in record.box_pids if p > 0)
    return SplitStatistics(dataset.split, len(dataset), len(identities), len({r.camid for r in dataset if r.camid is not None}),
                           sum(len(r.captions) for r in dataset), len(dataset.attribute_names or ()), dataset.missing_images)


def dataset_statistics(name: str, root: str | os.PathLike, splits: Sequence[str] | None = None, *,
                       skip_missing: bool = False, **options: Any) -> list[SplitStatistics]:
    """Statistics of every split of a dataset (``personvl data stats``)."""
    splits = splits or dataset_splits(name, root, **options)
    return [split_statistics(load_dataset(name, root, split, skip_missing=skip_missing, **options)) for split in splits]


def format_statistics(statistics: Sequence[SplitStatistics]) -> str:
    from personvl.reporting import format_table

    rows = [[s.split, s.images, s.identities, s.cameras, s.captions, s.attributes] for s in statistics]
    table = format_table(["split", "images", "identities", "cameras", "captions", "attributes"], rows)
    skipped = [f"{s.split}: {s.missing_images}" for s in statistics if s.missing_images]
    return table + (f"\nleft out for missing images: {', '.join(skipped)}" if skipped else "")


# ----------------------------------------------------------------------------- conversion


CONVERSIONS = ("jsonl", "shards")


def convert_dataset(name: str, root: str | os.PathLike, out: str | os.PathLike, to: str = "jsonl", *,
                    splits: Sequence[str] | None = None, shard_size: int = 1000, skip_missing: bool = False,
                    **options: Any) -> dict[str, Any]:
    """Write every split (or ``splits``) of a dataset as one JSONL index (``out`` a .jsonl file
    or a folder that gets ``records.jsonl``) or as webdataset shards in the folder ``out``.

    Returns a summary: the files written and the records per split.
    """
    if to not in CONVERSIONS:
        raise UsageError(f"convert to one of {', '.join(CONVERSIONS)}, got {to!r}")
    splits = list(splits or dataset_splits(name, root, **options))
    if ALL in splits:  # "all" already holds every other split of a JSONL index or a folder tree
        splits = [ALL]
    loaded = [load_dataset(name, root, split, skip_missing=skip_missing, **options) for split in splits]
    counts = {d.split: len(d) for d in loaded}
    if to == "shards":
        from personvl.data.shards import write_shards

        manifest = write_shards(loaded, out, shard_size=shard_size)
        return {"format": "shards", "path": str(Path(out) / "manifest.json"), "records": counts,
                "shards": sum(len(s["shards"]) for s in manifest["splits"].values())}
    out_path = Path(out)
    path = out_path if out_path.suffix == ".jsonl" else out_path / "records.jsonl"
    attribute_names = next((d.attribute_names for d in loaded if d.attribute_names), None)
    part_names = next((d.part_names for d in loaded if d.part_names), None)
    write_jsonl((r for d in loaded for r in d), path, attribute_names, part_names)
    return {"format": "jsonl", "path": str(path), "records": counts}
