"""A data loader that resumes mid-epoch at the exact batch where a checkpoint was taken.

Lightning saves the state of any loader with ``state_dict``/``load_state_dict`` in its
checkpoints and restores it before iterating. The state is the epoch's count of batches whose
training step ran (counted by the training task, so batches Lightning prefetched are not
counted); on resume the batch sampler skips that many batches of the same deterministic order.
"""

from __future__ import annotations

from typing import Any, Iterator

from torch.utils.data import DataLoader, Sampler


class SkippingBatchSampler(Sampler):
    """Wraps a batch sampler; the next iteration starts after ``skip`` batches."""

    def __init__(self, batch_sampler, dataset=None):
        self.batch_sampler = batch_sampler
        self.dataset = dataset
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at every epoch start: the sampler's order and the dataset's
        per-epoch draws (which caption) follow the epoch."""
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
        return {"batches_trained": self.batches_trained}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch_sampler.skip = int(state.get("batches_trained", 0))
