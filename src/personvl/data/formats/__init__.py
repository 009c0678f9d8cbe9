"""The registry of dataset formats: one module per on-disk layout, each listing its
``FORMATS``. ``get_format(name)`` finds one; ``format_names()`` lists them."""

from __future__ import annotations

import functools
import importlib

from personvl.data.formats.common import DatasetFormat, SplitContents
from personvl.errors import UsageError

_MODULES = ("pedes", "luperson", "reid_folders", "msmt17", "cuhk03", "pa100k", "peta", "rap", "lip",
            "pascal_person_part", "prw", "cuhk_sysu", "user")


@functools.cache
def _registry() -> dict[str, DatasetFormat]:
    registry: dict[str, DatasetFormat] = {}
    for module_name in _MODULES:
        for dataset_format in importlib.import_module(f"{__name__}.{module_name}").FORMATS:
            if dataset_format.name in registry:
                raise RuntimeError(f"dataset format {dataset_format.name!r} is registered twice")
            registry[dataset_format.name] = dataset_format
    return registry


def format_names() -> list[str]:
    return list(_registry())


def get_format(name: str) -> DatasetFormat:
    try:
        return _registry()[name]
    except KeyError:
        raise UsageError(f"unknown dataset {name!r}; known: {', '.join(_registry())}") from None


__all__ = ["DatasetFormat", "SplitContents", "format_names", "get_format"]
