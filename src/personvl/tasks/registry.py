"""Downstream task name -> the module that defines it.

Each module provides its :class:`~personvl.tasks.runner.Task` as ``TASK`` (run by
:func:`personvl.tasks.runner.run`), and the convenience functions ``finetune(config | path,
overrides=(), *, resume=False) -> summary`` and ``evaluate(model, dataset, root, *,
split="test", ...) -> metrics``. Modules are imported on first use, so a task's dependencies
load only when it runs.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Sequence

from personvl.errors import UsageError

TASKS = {
    "t2i": "personvl.tasks.text_to_image",
    "reid": "personvl.tasks.reid",
    "attributes": "personvl.tasks.attributes",
    "parsing": "personvl.tasks.parsing",
    "search": "personvl.tasks.person_search",
}


def task_module(task: str) -> ModuleType:
    """The module of ``task`` (one of ``TASKS``)."""
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    try:
        return importlib.import_module(TASKS[task])
    except ModuleNotFoundError as exc:
        if exc.name == TASKS[task]:
            raise UsageError(f"task {task!r} is not available in this installation ({TASKS[task]} is missing)") from None
        raise


def finetune_task(task: str, config: Any, overrides: Sequence[str] = (), resume: bool = False) -> dict[str, Any]:
    """Run ``task``'s recipe (a config object or a YAML path, with dotted overrides)."""
    from personvl.tasks.runner import run

    return run(task_module(task).TASK, config, overrides, resume=resume)


def evaluate_task(task: str, model, dataset: str, root: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """``task``'s metrics of ``model`` on ``dataset`` at ``root`` (``split="test"`` unless given)."""
    return task_module(task).evaluate(model, dataset, root, **options)
