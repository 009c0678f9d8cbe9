"""Person data: the canonical record, dataset readers, the synthetic person world, and the
pieces that feed training (transforms, P x K sampling, torch datasets, shards)."""

import importlib
from typing import Any

from personvl.data.loading import (
    SplitStatistics, convert_dataset, dataset_splits, dataset_statistics, find_missing_files, format_statistics,
    load_dataset)
from personvl.data.records import (
    UNLABELLED_PID, DatasetSplit, PersonRecord, count_identities, relabel_identities)

# These import torch or webdataset: loaded on first use, so that reading annotations (and
# ``personvl --help``) stays fast.
_LAZY = {
    "PersonImageDataset": "personvl.data.datasets", "ShardImageDataset": "personvl.data.datasets",
    "collate_samples": "personvl.data.datasets", "IdentitySampler": "personvl.data.samplers",
    "build_transform": "personvl.data.transforms", "write_shards": "personvl.data.shards",
    "iter_shards": "personvl.data.shards",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'personvl.data' has no attribute {name!r}")


def format_names() -> list[str]:
    """Names ``load_dataset`` accepts."""
    from personvl.data.formats import format_names as names

    return names()


__all__ = [
    "DatasetSplit", "PersonRecord", "SplitStatistics", "UNLABELLED_PID", "convert_dataset", "count_identities",
    "dataset_splits", "dataset_statistics", "find_missing_files", "format_names", "format_statistics",
    "load_dataset", "relabel_identities", *_LAZY,
]
