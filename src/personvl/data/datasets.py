"""Torch datasets that turn PersonRecords into training samples, from image files
(``PersonImageDataset``) or from webdataset shards (``ShardImageDataset``).

A sample is a dict: ``image`` (the transformed image), ``second_view`` (a second augmented view
of it, where the transform gives two: ``build_transform("moco")``), ``pid`` and ``camid`` (-1
where unknown), ``index``, ``caption`` (one of the record's captions, drawn per epoch from a
seed, so every epoch sees another description of the same image), ``tokens`` (the caption
through the optional ``tokenizer``, which runs in the loader workers), ``attribute_phrases``
(the record's, a tuple of strings, possibly empty; a batch holds one tuple per sample) and
``attributes`` (a float vector, where the record has one). An image that cannot be decoded
(corrupt, truncated) is skipped: the dataset yields None, ``collate_samples`` drops it and
reports the number in the batch's ``skipped`` entry, and a warning names the file; training
goes on.
"""

from __future__ import annotations

import io
import logging
import os
import random
from typing import Any, Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, default_collate, get_worker_info

from personvl.data.records import PersonRecord

logger = logging.getLogger("personvl.data")

# What Pillow raises for a damaged file: OSError (truncated, unidentified), SyntaxError and
# ValueError (broken headers), DecompressionBombError (absurd sizes).
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def choose_caption(captions: Sequence[str], seed: int, epoch: int, index: int) -> str:
    """One caption per image and epoch, the same in every worker and on every rank."""
    if not captions:
        return ""
    if len(captions) == 1:
        return captions[0]
    return captions[random.Random(f"{seed}:{epoch}:{index}").randrange(len(captions))]


def open_image(source: str | bytes) -> Image.Image:
    """An RGB image decoded completely, so that a truncated file fails here and not later."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        image.load()
        # convert() copies even when nothing changes; most person crops are RGB already.
        return image if image.mode == "RGB" else image.convert("RGB")


class SampleBuilder:
    """Record + decoded image -> sample dict (shared by the file and the shard datasets)."""

    def __init__(self, transform: Callable | None = None, tokenizer: Callable[[str], Any] | None = None, seed: int = 0) -> None:
        self.transform = transform
        self.tokenizer = tokenizer
        self.seed = seed

    def __call__(self, record: PersonRecord, image: Image.Image, index: int, epoch: int) -> dict[str, Any]:
        caption = choose_caption(record.captions, self.seed, epoch, index)
        if self.transform is not None:
            # Augmentation draws depend on (seed, epoch, sample) only, not on which worker or rank
            # handles the sample or how many it handled before: a resumed run flips and crops
            # exactly as an uninterrupted one. Transforms draw from the CPU generator only: seeding
            # it alone skips torch.manual_seed's deferred seeding of every accelerator backend,
            # which records a stack trace per call and cost more than the transform itself.
            torch.default_generator.manual_seed(hash((self.seed, epoch, index)) & 0x7FFF_FFFF_FFFF)
        view = self.transform(image) if self.transform is not None else image
        sample: dict[str, Any] = {
            "image": view,
            "pid": -1 if record.pid is None else record.pid,
            "camid": -1 if record.camid is None else record.camid,
            "index": index,
            "caption": caption,
            "attribute_phrases": tuple(record.attribute_phrases),
        }
        if isinstance(view, tuple):     # two augmented views of the image
            sample["image"], sample["second_view"] = view
        if self.tokenizer is not None:
            sample["tokens"] = self.tokenizer(caption)
        if record.attributes is not None:
            sample["attributes"] = torch.tensor(record.attributes, dtype=torch.float32)
        return sample


class _EpochCounter:
    """The epoch in shared memory: workers started before ``set_epoch`` (persistent workers)
    still read the current value."""

    def __init__(self) -> None:
        self.value = torch.zeros((), dtype=torch.int64).share_memory_()

    def get(self) -> int:
        return int(self.value.item())

    def set(self, epoch: int) -> None:
        self.value.fill_(epoch)


def preload_images(records: Sequence[PersonRecord], size: tuple[int, int], *, threads: int | None = None,
                   progress: bool = True) -> list[Image.Image | None]:
    """Every record's image decoded and resized to ``size`` (height, width) with the bicubic
    filter of the training transforms, which then leave it as it is: samples built from these
    are the ones the files give, without the decoding and resizing that take most of a loader
    worker's time on small crops. An unreadable image is None (a warning names it), and a
    dataset given these images skips it as it would skip the file.

    Decoding runs on ``threads`` threads (default: the CPU count); Pillow releases the
    interpreter lock while it decodes and resizes.
    """
    from concurrent.futures import ThreadPoolExecutor

    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F
    from tqdm.auto import tqdm

    height, width = size

    def load(path: str) -> Image.Image | None:
        try:
            return F.resize(open_image(path), [height, width], InterpolationMode.BICUBIC)
        except IMAGE_ERRORS as exc:
            logger.warning("skipped unreadable image %s (%s)", path, exc)
            return None

    paths = [record.image_path for record in records]
    with ThreadPoolExecutor(max(1, threads or os.cpu_count() or 1)) as pool:
        return list(tqdm(pool.map(load, paths, chunksize=64), total=len(paths), unit="img",
                         desc=f"decoding images at {height}x{width}", disable=not progress))


class PersonImageDataset(Dataset):
    """Map-style dataset over records whose images are files (any ``load_dataset`` split), or
    already decoded: ``images`` from ``preload_images``, one per record."""

    def __init__(self, records: Sequence[PersonRecord], transform: Callable | None = None,
                 tokenizer: Callable[[str], Any] | None = None, seed: int = 0,
                 images: Sequence[Image.Image | None] | None = None) -> None:
        if images is not None and len(images) != len(records):
            raise ValueError(f"{len(images)} preloaded images for {len(records)} records")
        self.records = records
        self.images = images
        self.build = SampleBuilder(transform, tokenizer, seed)
        self._epoch = _EpochCounter()
        self.skipped = 0   # in this process; batches carry the count from every worker

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        record = self.records[index]
        if self.images is not None:
            image = self.images[index]
            if image is None:       # preload_images named it
                self.skipped += 1
                return None
            return self.build(record, image, index, self._epoch.get())
        try:
            image = open_image(record.image_path)
        except IMAGE_ERRORS as exc:
            self.skipped += 1
            logger.warning("skipped unreadable image %s (%s)", record.image_path, exc)
            return None
        return self.build(record, image, index, self._epoch.get())


class ShardImageDataset(IterableDataset):
    """Streams a split of a shard folder (``personvl data convert ... --to shards``).

    Shards are split across DDP ranks (``rank``/``world_size``, default from
    torch.distributed) and loader workers, shuffled per epoch; samples pass through a
    shuffle buffer. ``samples_per_epoch`` (total over all ranks and workers) makes every
    worker yield the same number, so that DDP ranks take equal steps.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None,
                 tokenizer: Callable[[str], Any] | None = None, *, seed: int = 0, shuffle_buffer: int = 1000,
                 samples_per_epoch: int | None = None, rank: int | None = None, world_size: int | None = None) -> None:
        from personvl.data.shards import read_manifest, shard_files

        manifest = read_manifest(root)
        self.files = shard_files(root, split, manifest)
        self.num_samples = manifest["splits"][split]["samples"]
        self.attribute_names = manifest.get("attribute_names")
        self.build = SampleBuilder(transform, tokenizer, seed)
        self.seed, self.shuffle_buffer, self.samples_per_epoch = seed, shuffle_buffer, samples_per_epoch
        self.rank, self.world_size = rank, world_size
        self._epoch = _EpochCounter()
        self.skipped = 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    def _placement(self) -> tuple[int, int, int, int]:
        rank, world_size = self.rank, self.world_size
        if rank is None or world_size is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
            world_size = torch.distributed.get_world_size() if distributed else 1
        info = get_worker_info()
        return rank, world_size, (info.id if info else 0), (info.num_workers if info else 1)

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        from personvl.data.shards import stream_shards

        rank, world_size, worker, num_workers = self._placement()
        epoch = self._epoch.get()
        per_worker = None if self.samples_per_epoch is None else self.samples_per_epoch // (world_size * num_workers)
        for sample in stream_shards(self.files, seed=self.seed, epoch=epoch, rank=rank, world_size=world_size,
                                    worker=worker, num_workers=num_workers, shuffle_buffer=self.shuffle_buffer,
                                    samples=per_worker):
            try:
                image = open_image(sample.image)
            except IMAGE_ERRORS as exc:
                self.skipped += 1
                logger.warning("skipped unreadable image %s in shards (%s)", sample.record.image_path, exc)
                yield None
                continue
            yield self.build(sample.record, image, sample.index, epoch)


# Entries of a sample that stay one per sample in a batch: their lengths differ.
PER_SAMPLE_KEYS = ("attribute_phrases",)


def collate_samples(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """``default_collate`` of the readable samples (``attribute_phrases`` as a list, one tuple
    per sample), plus ``skipped``: how many were not readable."""
    kept = [s for s in samples if s is not None]
    batch: dict[str, Any] = {}
    if kept:
        lists = {key: [s[key] for s in kept] for key in PER_SAMPLE_KEYS if key in kept[0]}
        batch = default_collate([{k: v for k, v in s.items() if k not in lists} for s in kept])
        batch.update(lists)
    batch["skipped"] = len(samples) - len(kept)
    return batch
