"""Webdataset tar shards: the form of data too big for a folder walk.

A shard folder holds ``<split>-000000.tar`` ... and ``manifest.json``. Each sample is the
original image file's bytes (``jpg``, ``png`` ...; never re-encoded), the part mask under
``mask.png`` where the record has one, and the record as ``json`` (``PersonRecord.to_dict``,
with the original image path for provenance). The manifest lists every shard with its sample
count, so a reader knows the size of an epoch without opening a tar.

Reading splits the shard list across DDP ranks first and data-loader workers second, after an
order shuffled per epoch with a seed every rank shares; samples are then shuffled in a buffer.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

from personvl.data.records import DatasetSplit, PersonRecord
from personvl.errors import PersonvlError, UsageError

MANIFEST = "manifest.json"
FORMAT = "personvl-shards"
_IMAGE_KEYS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".bmp": "bmp", ".webp": "webp", ".tif": "tiff", ".tiff": "tiff"}


def write_shards(datasets: Sequence[DatasetSplit], out: str | os.PathLike, shard_size: int = 1000) -> dict[str, Any]:
    """Write each split into tar shards of ``shard_size`` samples and a manifest; returns the
    manifest. Shards are written under temporary names and renamed when complete."""
    import webdataset as wds

    if shard_size < 1:
        raise UsageError(f"shard size must be at least 1, got {shard_size}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = datasets[0] if datasets else None
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": 1, "dataset": first.dataset if first else None,
        "attribute_names": next((d.attribute_names for d in datasets if d.attribute_names), None),
        "part_names": next((d.part_names for d in datasets if d.part_names), None),
        "splits": {},
    }
    for dataset in datasets:
        shards = []
        for start in range(0, len(dataset), shard_size):
            name = f"{dataset.split}-{len(shards):06d}.tar"
            tmp = out_dir / f".{name}.tmp"
            with tmp.open("wb") as stream, wds.TarWriter(stream, encoder=False, mtime=0) as writer:
                for index in range(start, min(start + shard_size, len(dataset))):
                    writer.write(_sample(dataset[index], f"{dataset.split}-{index:09d}"))
            os.replace(tmp, out_dir / name)
            shards.append({"file": name, "samples": min(shard_size, len(dataset) - start)})
        manifest["splits"][dataset.split] = {"samples": len(dataset), "shards": shards}
    tmp = out_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / MANIFEST)
    return manifest


def _sample(record: PersonRecord, key: str) -> dict[str, Any]:
    extension = os.path.splitext(record.image_path)[1].lower()
    if extension not in _IMAGE_KEYS:
        raise PersonvlError(f"{record.image_path}: cannot shard a {extension or 'suffix-less'} file as an image")
    sample = {"__key__": key, _IMAGE_KEYS[extension]: _read_bytes(record.image_path),
              "json": json.dumps(record.to_dict(), ensure_ascii=False).encode("utf-8")}
    if record.mask_path:
        sample["mask.png"] = _read_bytes(record.mask_path)
    return sample


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise PersonvlError(f"{path}: cannot read ({exc.strerror})") from None


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise PersonvlError(f"{path}: not found; expected the manifest of a shard folder (personvl data convert ... --to shards)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PersonvlError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "splits" not in manifest:
        raise PersonvlError(f"{path}: not a personvl shard manifest")
    return manifest


def shard_files(root: str | os.PathLike, split: str, manifest: dict[str, Any] | None = None) -> list[str]:
    manifest = manifest or read_manifest(root)
    if split not in manifest["splits"]:
        raise UsageError(f"{root}: no {split!r} shards (splits: {', '.join(manifest['splits'])})")
    return [str(Path(root) / shard["file"]) for shard in manifest["splits"][split]["shards"]]


class ShardSample(NamedTuple):
    index: int            # position of the record in its split when the shards were written
    record: PersonRecord
    image: bytes
    mask: bytes | None


def _decode(sample: dict[str, Any]) -> ShardSample:
    image = next((sample[k] for k in ("jpg", "png", "bmp", "webp", "tiff") if k in sample), None)
    if image is None or "json" not in sample:
        raise PersonvlError(f"{sample.get('__url__', 'shard')}: sample {sample.get('__key__')!r} lacks an image or its json")
    index = int(sample["__key__"].rsplit("-", 1)[-1])
    return ShardSample(index, PersonRecord.from_dict(json.loads(sample["json"])), image, sample.get("mask.png"))


def _samples(files: Sequence[str]) -> Iterator[ShardSample]:
    import webdataset as wds

    if not files:
        return
    pipeline = wds.WebDataset(list(files), shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False)
    for sample in pipeline:
        yield _decode(sample)


def iter_shards(root: str | os.PathLike, split: str) -> Iterator[ShardSample]:
    """Every sample of a split in written order."""
    yield from _samples(shard_files(root, split))


def assigned_shards(files: Sequence[str], *, seed: int, epoch: int, rank: int, world_size: int,
                    worker: int, num_workers: int) -> list[str]:
    """The shards one data-loader worker of one rank reads this epoch: the same seeded
    order on every rank, ranks take every ``world_size``-th shard, workers every
    ``num_workers``-th of those. Disjoint, and together all of them."""
    if len(files) < world_size * num_workers:
        raise UsageError(f"{len(files)} shard(s) cannot feed {world_size} rank(s) x {num_workers} worker(s); "
                         "write smaller shards (--shard-size) or use fewer workers")
    order = list(files)
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order[rank::world_size][worker::num_workers]


def stream_shards(files: Sequence[str], *, seed: int, epoch: int, rank: int, world_size: int, worker: int,
                  num_workers: int, shuffle_buffer: int = 1000,
                  samples: int | None = None) -> Iterator[ShardSample]:
    """The samples of this worker's shards, shuffled in a buffer of ``shuffle_buffer``.

    ``samples`` fixes how many this worker yields, cycling its shards when they hold fewer, so
    that every rank takes the same number of steps under DDP whatever the shard sizes.
    """
    mine = assigned_shards(files, seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                           worker=worker, num_workers=num_workers)
    rng = random.Random(f"{seed}:{epoch}:{rank}:{worker}")
    if samples is not None and samples <= 0:
        return
    source = _cycle(mine) if samples is not None else _samples(mine)
    buffer: list[ShardSample] = []
    produced = 0
    for item in source:
        buffer.append(item)
        if len(buffer) < max(1, shuffle_buffer):
            continue
        swap = rng.randrange(len(buffer))
        buffer[swap], buffer[-1] = buffer[-1], buffer[swap]
        yield buffer.pop()
        produced += 1
        if samples is not None and produced >= samples:
            return
    rng.shuffle(buffer)
    yield from (buffer if samples is None else buffer[: samples - produced])


def _cycle(files: Sequence[str]) -> Iterator[ShardSample]:
    while True:
        empty = True
        for item in _samples(files):
            empty = False
            yield item
        if empty:
            return
