"""Running independent rendering and writing tasks on all cores, with a progress bar."""

from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Callable

from tqdm import tqdm


def run_parallel(function: Callable, tasks: list, workers: int, description: str, progress: bool) -> list:
    """``[function(t) for t in tasks]`` on ``workers`` processes; results keep the task order."""
    results = []
    with tqdm(total=len(tasks), desc=description, unit="img", disable=not progress, file=sys.stderr) as bar:
        if workers <= 1 or len(tasks) < 8:
            for task in tasks:
                results.append(function(task))
                bar.update()
        else:
            context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            with context.Pool(workers) as pool:
                for result in pool.imap(function, tasks, chunksize=16):
                    results.append(result)
                    bar.update()
    return results


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))
