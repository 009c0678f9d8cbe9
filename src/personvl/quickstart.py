"""``personvl quickstart``: the main job on the built-in synthetic person world."""

from __future__ import annotations

import os
import time
from typing import Any

from personvl.data.synth import generate_world
from personvl.reporting import format_world_summary

QUICKSTART_IDENTITIES = 400


def quickstart(
    out_dir: str | os.PathLike = "personvl-quickstart",
    *,
    identities: int | None = QUICKSTART_IDENTITIES,
    images_per_identity: int | None = None,
    cameras: int | None = None,
    seed: int | None = None,
    config: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    knobs: dict[str, Any] | None = None,
    echo=print,
) -> dict[str, Any]:
    """Generate a small synthetic world under ``out_dir/world`` with its contact sheet and print
    its statistics. Returns world.json's content."""
    world_dir = os.path.join(os.fspath(out_dir), "world")
    started = time.perf_counter()
    echo(f"generating the synthetic person world in {world_dir} ...")
    world = generate_world(world_dir, identities, images_per_identity, cameras, seed, config=config,
                           workers=workers, progress=progress, preview=True, **(knobs or {}))
    echo(format_world_summary(world_dir, world))
    echo(f"\ndone in {time.perf_counter() - started:.1f} s")
    return world
