"""personvl: person-centric vision-language representation learning.

``import personvl`` is light: the sub-packages that load torch (models, evaluation, training
...) are imported on first use, e.g. ``personvl.models.create_model(...)``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from personvl.data import PersonRecord  # noqa: E402
from personvl.errors import PersonvlError, UsageError  # noqa: E402

_SUBPACKAGES = ("config", "data", "evaluation", "index", "methods", "models", "objectives", "serve", "tasks", "training")

__all__ = ["PersonRecord", "PersonvlError", "UsageError", "__version__", *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"personvl.{name}")
    raise AttributeError(f"module 'personvl' has no attribute {name!r}")
