"""Transforms, P x K sampling under DDP, caption sampling and tokenisation in loader workers,
unreadable images skipped during loading, and shard streaming across ranks and workers."""

import collections
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from personvl import UsageError
from personvl.data import (
    IdentitySampler, PersonImageDataset, PersonRecord, ShardImageDataset, build_transform, collate_samples, write_shards)
from personvl.data.records import DatasetSplit
from personvl.data.shards import assigned_shards
from personvl.data.datasets import choose_caption, preload_images


def test_recipes_set_size_and_normalisation():
    image = Image.new("RGB", (64, 100), (91, 82, 84))  # about PLIP's mean colour
    plip = build_transform("plip", train=False)(image)
    assert plip.shape == (3, 256, 128) and plip.abs().max() < 0.05
    assert build_transform("clip", train=True)(image).shape == (3, 384, 128)
    reid = build_transform("reid", train=True)
    names = [type(t).__name__ for t in reid.transforms]
    assert names == ["Resize", "RandomHorizontalFlip", "Pad", "RandomCrop", "ToNormalizedTensor", "RandomErasing"]
    assert [type(t).__name__ for t in build_transform("plip").transforms] == ["Resize", "RandomHorizontalFlip", "ToNormalizedTensor"]
    assert build_transform("plip", train=False, height=64, width=32)(image).shape == (3, 64, 32)
    with pytest.raises(UsageError, match="unknown transform recipe 'vit'"):
        build_transform("vit")


def _padding(transform):
    return [t.padding for t in transform.transforms if type(t).__name__ == "Pad"]


def test_padding_scales_with_the_width_unless_given():
    assert _padding(build_transform("reid")) == [10]                                 # 256x128: the recipe's own
    assert _padding(build_transform("reid", height=64, width=32)) == [2]             # a quarter as wide
    assert _padding(build_transform("reid", height=384, width=128)) == [10]          # same width
    assert _padding(build_transform("reid", height=64, width=32, padding=6)) == [6]  # asked for
    assert _padding(build_transform("clip", height=128, width=64)) == [5]


def test_normalised_tensor_matches_torchvision():
    from torchvision import transforms as T
    from personvl.data.transforms import PLIP_MEAN, PLIP_STD, ToNormalizedTensor

    pixels = np.random.default_rng(0).integers(0, 256, size=(40, 20, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    expected = T.Normalize(PLIP_MEAN, PLIP_STD)(T.ToTensor()(image))
    assert torch.allclose(ToNormalizedTensor(PLIP_MEAN, PLIP_STD)(image), expected, atol=1e-5)


def pids_with_counts(counts):
    return [pid for pid, n in enumerate(counts) for _ in range(n)]


def test_pk_sampler_batches_hold_p_identities_with_k_images():
    pids = pids_with_counts([5, 4, 1, 8, 3, 6, 2, 4])
    sampler = IdentitySampler(pids, identities=4, instances=2, seed=1)
    batches = sampler.batches()
    assert len(sampler) == 8 * len(batches) and 3 <= len(batches) <= 4  # 16 groups of K, P = 4
    for batch in batches:
        identities = collections.Counter(pids[i] for i in batch)
        assert len(identities) == 4 and set(identities.values()) == {2}
    assert list(sampler) == [i for b in batches for i in b.tolist()]
    again = IdentitySampler(pids, identities=4, instances=2, seed=1)
    assert list(again) == list(sampler)  # deterministic
    sampler.set_epoch(1)
    assert list(sampler) != list(again)  # reshuffled per epoch


def draw_by_definition(pids, identities: int, instances: int, seed: int, epoch: int = 0) -> list[list[int]]:
    """The P x K draw as its docstring defines it, one identity list rebuilt per batch."""
    rng = np.random.default_rng([seed, epoch])
    by_identity: dict[int, list[int]] = {}
    for index, pid in enumerate(pids):
        by_identity.setdefault(int(pid), []).append(index)
    chunks = []
    for _, indices in sorted(by_identity.items()):
        indices = np.asarray(indices)
        drawn = rng.choice(indices, size=instances, replace=True) if len(indices) < instances else rng.permutation(indices)
        chunks.append([drawn[i:i + instances] for i in range(0, len(drawn) - len(drawn) % instances, instances)])
    batches, available = [], [i for i, c in enumerate(chunks) if c]
    while len(available) >= identities:
        chosen = rng.choice(len(available), size=identities, replace=False)
        batches.append(np.concatenate([chunks[available[c]].pop() for c in chosen]).tolist())
        available = [i for i in available if chunks[i]]
    return batches


@pytest.mark.parametrize("counts, identities, instances", [
    ([5, 4, 1, 8, 3, 6, 2, 4] * 5, 4, 2),     # uneven identities, some drawn with replacement
    ([1] * 300, 16, 1),                        # instance-level: every batch empties P identities
    ([3, 9, 2, 7] * 20, 5, 3),
])
def test_pk_sampler_draws_exactly_the_defined_batches(counts, identities, instances):
    pids = pids_with_counts(counts)
    for epoch in (0, 3):
        sampler = IdentitySampler(pids, identities, instances, seed=7)
        sampler.set_epoch(epoch)
        assert [b.tolist() for b in sampler.batches()] == draw_by_definition(pids, identities, instances, 7, epoch)


def test_pk_sampler_draws_two_hundred_thousand_single_image_identities():
    sampler = IdentitySampler(np.arange(200_000), identities=512, instances=1, seed=0)
    batches = sampler.batches()
    assert len(batches) == 200_000 // 512
    assert len(np.unique(np.concatenate(batches))) == 512 * len(batches)   # every image at most once


def test_pk_sampler_splits_ranks_disjointly_with_equal_lengths():
    pids = pids_with_counts([6] * 10 + [3] * 7)
    whole = IdentitySampler(pids, 3, 2, seed=4, rank=0, world_size=1).batches()
    ranks = [IdentitySampler(pids, 3, 2, seed=4, rank=r, world_size=3) for r in range(3)]
    per_rank = [[tuple(b) for b in s.batches()] for s in ranks]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == len(whole) // 3
    flat = [b for rank in per_rank for b in rank]
    assert len(set(flat)) == len(flat) and set(flat) <= {tuple(b) for b in whole}
    with pytest.raises(UsageError, match="needs at least 30 identities, the data has 17"):
        IdentitySampler(pids, 30, 2)


def test_caption_sampling_is_seeded_per_epoch():
    captions = [f"caption {i}" for i in range(5)]
    picks = [choose_caption(captions, seed=0, epoch=e, index=3) for e in range(20)]
    assert len(set(picks)) > 1 and picks == [choose_caption(captions, 0, e, 3) for e in range(20)]
    assert choose_caption([], 0, 0, 0) == "" and choose_caption(["only"], 0, 9, 9) == "only"


def jpeg(path: Path, colour) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 48), colour).save(path, quality=95)
    return str(path)


def records(tmp_path: Path, n: int = 8) -> list[PersonRecord]:
    return [PersonRecord(jpeg(tmp_path / f"{i}.jpg", (20 * i, 100, 50)), pid=i // 2, camid=i % 2,
                         captions=[f"person {i} first", f"person {i} second"], attributes=[i % 2, 1], split="train")
            for i in range(n)]


class WordCount:
    """A tokenizer that records the process it ran in."""

    def __call__(self, caption: str) -> torch.Tensor:
        return torch.tensor([len(caption.split()), os.getpid()])


def test_dataset_tokenises_in_workers_and_skips_unreadable_images(tmp_path, caplog):
    items = records(tmp_path)
    (tmp_path / "3.jpg").write_bytes((tmp_path / "3.jpg").read_bytes()[:200])  # truncated
    (tmp_path / "5.jpg").write_bytes(b"not an image at all")
    dataset = PersonImageDataset(items, build_transform("plip", train=False, height=32, width=16), tokenizer=WordCount(), seed=7)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_samples)
    batches = list(loader)
    assert [b["skipped"] for b in batches] == [1, 1]
    assert sorted(i for b in batches for i in b["index"].tolist()) == [0, 1, 2, 4, 6, 7]
    first = batches[0]
    assert first["image"].shape == (3, 3, 32, 16) and first["attributes"].shape == (3, 2)
    assert first["pid"].tolist() == [0, 0, 1] and first["camid"].tolist() == [0, 1, 0]
    worker_pids = {int(p) for b in batches for p in b["tokens"][:, 1]}
    assert os.getpid() not in worker_pids  # tokenised in the loader workers
    assert all(c.startswith("person ") for c in first["caption"])
    with caplog.at_level("WARNING", logger="personvl.data"):
        assert dataset[3] is None
    assert "skipped unreadable image" in caplog.text and "3.jpg" in caplog.text and dataset.skipped == 1


def test_preloaded_images_give_the_samples_the_files_give(tmp_path, caplog):
    items = records(tmp_path, n=4)
    (tmp_path / "2.jpg").write_bytes(b"not an image at all")
    with caplog.at_level("WARNING", logger="personvl.data"):
        images = preload_images(items, (32, 16), threads=2, progress=False)
    assert [image is None for image in images] == [False, False, True, False]
    assert images[0].size == (16, 32) and "2.jpg" in caplog.text
    transform = build_transform("plip", train=True, height=32, width=16)
    from_files = PersonImageDataset(items, transform, seed=3)
    preloaded = PersonImageDataset(items, transform, seed=3, images=images)
    for epoch in (0, 1):
        from_files.set_epoch(epoch)
        preloaded.set_epoch(epoch)
        for index in (0, 1, 3):
            expected, got = from_files[index], preloaded[index]
            assert torch.equal(got["image"], expected["image"]) and got["caption"] == expected["caption"]
    assert preloaded[2] is None and preloaded.skipped == 1
    with pytest.raises(ValueError, match="3 preloaded images for 4 records"):
        PersonImageDataset(items, transform, images=images[:3])


def test_epoch_reaches_persistent_workers(tmp_path):
    items = records(tmp_path, 4)
    for r in items:
        r.captions = [f"{r.pid} caption {k}" for k in range(6)]
    dataset = PersonImageDataset(items, build_transform("plip", train=False, height=16, width=8))
    loader = DataLoader(dataset, batch_size=4, num_workers=1, persistent_workers=True, collate_fn=collate_samples)
    seen = []
    for epoch in range(4):
        dataset.set_epoch(epoch)
        seen.append(next(iter(loader))["caption"])
    expected = [[choose_caption(items[i].captions, 0, e, i) for i in range(4)] for e in range(4)]
    assert seen == expected and len({tuple(s) for s in seen}) > 1


def test_shards_split_across_ranks_and_workers(tmp_path):
    items = records(tmp_path / "images", 12)
    write_shards([DatasetSplit(items, dataset="x", split="train", root=str(tmp_path))], tmp_path / "shards", shard_size=3)
    files = [str(tmp_path / "shards" / f"train-{k:06d}.tar") for k in range(4)]
    parts = [assigned_shards(files, seed=3, epoch=0, rank=r, world_size=2, worker=w, num_workers=2) for r in range(2) for w in range(2)]
    assert sorted(f for p in parts for f in p) == files and all(len(p) == 1 for p in parts)
    later = [assigned_shards(files, seed=3, epoch=e, rank=0, world_size=2, worker=0, num_workers=2) for e in range(1, 6)]
    assert any(p != parts[0] for p in later)  # shard order changes with the epoch
    transform = build_transform("plip", train=False, height=16, width=8)
    seen = []
    for rank in range(2):
        dataset = ShardImageDataset(tmp_path / "shards", "train", transform, seed=3, shuffle_buffer=2, rank=rank, world_size=2)
        for batch in DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_samples):
            seen += batch["index"].tolist()
            assert batch["image"].shape[1:] == (3, 16, 8)
    assert sorted(seen) == list(range(12))  # every sample once over all ranks and workers
    with pytest.raises(UsageError, match="4 shard\\(s\\) cannot feed 2 rank\\(s\\) x 3 worker\\(s\\)"):
        assigned_shards(files, seed=0, epoch=0, rank=0, world_size=2, worker=0, num_workers=3)


def test_shard_epochs_have_equal_length_per_rank(tmp_path):
    items = records(tmp_path / "images", 10)
    write_shards([DatasetSplit(items, dataset="x", split="train", root=str(tmp_path))], tmp_path / "shards", shard_size=3)
    lengths = []
    for rank in range(2):  # shards of 3, 3, 3, 1 samples: rank 1 holds fewer
        dataset = ShardImageDataset(tmp_path / "shards", "train", None, samples_per_epoch=8, rank=rank, world_size=2)
        lengths.append(sum(1 for _ in dataset))
    assert lengths == [4, 4]


def test_corrupt_image_in_shards_is_skipped(tmp_path, caplog):
    items = records(tmp_path / "images", 4)
    Path(items[2].image_path).write_bytes(b"\xff\xd8\xff truncated jpeg")
    write_shards([DatasetSplit(items, dataset="x", split="train", root=str(tmp_path))], tmp_path / "shards", shard_size=4)
    dataset = ShardImageDataset(tmp_path / "shards", "train", build_transform("plip", train=False, height=16, width=8))
    with caplog.at_level("WARNING", logger="personvl.data"):
        batch = collate_samples(list(dataset))
    assert batch["skipped"] == 1 and sorted(batch["index"].tolist()) == [0, 1, 3]
    assert "skipped unreadable image" in caplog.text and "2.jpg" in caplog.text and dataset.skipped == 1
