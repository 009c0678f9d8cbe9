"""Data loaders that resume mid-epoch at the exact batch where a checkpoint was taken.

Lightning saves the state of any loader with ``state_dict``/``load_state_dict`` in its
checkpoints and restores it before iterating. The state is the epoch and the epoch's count of
batches whose training step ran (counted by the training task, so batches Lightning prefetched
are not counted); on resume the batch sampler skips that many batches of the same deterministic
order. The epoch is part of the state because Lightning, when it resumes, starts the loader's
iterator (and its workers, which read ahead) before it announces the epoch.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator

from torch.utils.data import DataLoader, Sampler


class SkippingBatchSampler(Sampler):
    """Wraps a batch sampler; the next iteration starts after ``skip`` batches."""

    def __init__(self, batch_sampler, dataset=None):
        self.batch_sampler = batch_sampler
        self.dataset = dataset
        self.skip = 0
        self.epoch = 0

    @property
    def sampler(self) -> "SkippingBatchSampler":
        # Lightning announces each epoch to ``loader.sampler`` and ``loader.batch_sampler.sampler``
        # only; answering for the batch sampler's sampler routes the call to ``set_epoch`` below.
        return self

    def set_epoch(self, epoch: int) -> None:
        """Called at every epoch start: the sampler's order and the dataset's per-epoch draws
        (which caption, which augmentation) follow the epoch."""
        self.epoch = epoch
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)
        elif hasattr(getattr(self.batch_sampler, "sampler", None), "set_epoch"):
            self.batch_sampler.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        for position, batch in enumerate(self.batch_sampler):
            if position >= skip:
                yield batch

    def __len__(self) -> int:
        return len(self.batch_sampler)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a batch sampler whose position within the epoch is saved and restored."""

    def __init__(self, dataset, batch_sampler, **kwargs):
        super().__init__(dataset, batch_sampler=SkippingBatchSampler(batch_sampler, dataset), **kwargs)
        self.batches_trained = 0

    def __iter__(self):
        self.batches_trained = self.batch_sampler.skip
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.batch_sampler.epoch, "batches_trained": self.batches_trained}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, trained = int(state.get("epoch", 0)), int(state.get("batches_trained", 0))
        self.batch_sampler.set_epoch(epoch)
        if trained >= len(self.batch_sampler):
            # Saved after the epoch's last batch: Lightning goes on with the next epoch.
            epoch, trained = epoch + 1, 0
            self.batch_sampler.set_epoch(epoch)
        self.batch_sampler.skip = trained


class _EpochRelay(Sampler):
    """What an iterable dataset's loader draws its batches' placeholder indices from (one None
    per sample, as torch's own); it passes Lightning's epoch announcement on to the dataset."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[None]:
        return itertools.repeat(None)


class ResumableStreamLoader(DataLoader):
    """Batches of ``batch_size`` from an iterable dataset (a shard stream) whose every epoch
    holds ``batches_per_epoch`` batches on this rank, with the epoch's position saved and restored.

    A stream cannot seek: a resume at an epoch boundary starts the next epoch's stream, and a
    resume mid-epoch reads the interrupted epoch's stream from its start and drops the batches the
    checkpoint had trained (loaded and decoded again, not trained on). The stream is a function
    of seed, epoch, rank and worker, so with the same ranks, workers and batch size the resumed
    run trains on exactly the batches of an uninterrupted one.
    """

    def __init__(self, dataset, batch_size: int, batches_per_epoch: int, **kwargs):
        super().__init__(dataset, batch_size=batch_size, drop_last=True, **kwargs)
        # Lightning announces epochs to ``loader.batch_sampler.sampler``, here torch's placeholder.
        self.batch_sampler.sampler = self.relay = _EpochRelay(dataset)
        self.batches_per_epoch = batches_per_epoch
        self.batches_trained = 0
        self.skip = 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self):
        skip, self.skip = self.skip, 0
        self.batches_trained = skip
        return itertools.islice(super().__iter__(), skip, None)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.relay.epoch, "batches_trained": self.batches_trained}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, trained = int(state.get("epoch", 0)), int(state.get("batches_trained", 0))
        if trained >= self.batches_per_epoch:
            epoch, trained = epoch + 1, 0   # saved after the epoch's last batch
        self.relay.set_epoch(epoch)
        self.skip = trained
