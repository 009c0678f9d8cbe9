"""Plain-text tables for the terminal."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def world_split_rows(records: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """One row per split: identities, images, captions, cameras."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[record["split"]].append(record)
    rows = []
    for split in ("train", "val", "test"):
        items = groups.get(split, [])
        rows.append([split, len({r["pid"] for r in items}), len(items),
                     sum(len(r["captions"]) for r in items), len({r["camid"] for r in items})])
    return rows


def format_world_summary(out_dir: str | os.PathLike, world: dict[str, Any]) -> str:
    from personvl.data.synth import read_world_records

    records = read_world_records(out_dir)
    calibration = world["calibration"]
    parts = [
        f"synthetic world in {out_dir}",
        format_table(["split", "identities", "images", "captions", "cameras"], world_split_rows(records)),
        "",
        "datasets: " + ", ".join(f"{name} ({os.path.join(str(out_dir), path)})" for name, path in world["datasets"].items()),
        f"scenes: {world['counts']['scenes']} frames (prw); attributes per image: "
        f"{len(world['vocabulary']['attribute_names'])}; part labels: {len(world['vocabulary']['part_labels'])}",
        "",
        "calibration on the test split (percent):",
        format_table(["figure", "value"], [
            ["chance text-to-image R@1", calibration["chance_t2i_R1"]],
            ["attribute-oracle text-to-image R@1", calibration["oracle_t2i_R1"]],
            ["colour-histogram re-ID mAP", calibration["color_histogram_reid_mAP"]],
            ["wrong colours among stated colours", 100 * calibration["wrong_colour_share"]],
        ]),
    ]
    if "preview" in world:
        parts.append(f"\ncontact sheet: {os.path.join(str(out_dir), world['preview'])}")
    return "\n".join(parts)
