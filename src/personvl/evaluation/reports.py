"""Metric reports: a table on the terminal plus ``metrics.json``, and several runs merged into
one Markdown table."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from personvl.errors import PersonvlError, UsageError

REPORT_FILE = "metrics.json"


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float | int]:
    """The single-number entries (curves and per-class lists are left to ``metrics.json``)."""
    return {key: value for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def _format(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "nan" if math.isnan(value) else f"{value:.2f}"


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    return value


def metrics_table(metrics: Mapping[str, Any], title: str | None = None):
    """A rich Table of the scalar metrics."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in scalar_metrics(metrics).items():
        table.add_row(key, _format(value))
    return table


def write_report(metrics: Mapping[str, Any], out_dir: str | os.PathLike, *, name: str | None = None,
                 task: str | None = None, console=None) -> Path:
    """Print the metrics as a table and write ``out_dir/metrics.json``; returns the file path.

    The file holds ``{"name", "task", "metrics"}``; NaN is written as ``null``.
    """
    from rich.console import Console

    out_dir = Path(out_dir)
    name = name or out_dir.resolve().name
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / REPORT_FILE
        path.write_text(json.dumps({"name": name, "task": task, "metrics": _json_ready(dict(metrics))}, indent=1) + "\n")
    except OSError as exc:
        raise PersonvlError(f"cannot write {out_dir / REPORT_FILE}: {exc.strerror or exc}") from None
    (console or Console()).print(metrics_table(metrics, title=f"{name}" + (f" ({task})" if task else "")))
    return path


def load_report(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """(run name, metrics) from a ``metrics.json`` written by :func:`write_report`, or from a
    plain JSON object of metrics (named after its folder)."""
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except OSError as exc:
        raise PersonvlError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise PersonvlError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(content, dict):
        raise PersonvlError(f"{path} does not hold a JSON object of metrics")
    metrics = content.get("metrics") if isinstance(content.get("metrics"), dict) else content
    name = content.get("name") if isinstance(content.get("name"), str) else (path.resolve().parent.name or path.stem)
    return name, {k: (float("nan") if v is None else v) for k, v in metrics.items()}


def merge_reports(paths: Sequence[str | os.PathLike], names: Sequence[str] | None = None) -> str:
    """One Markdown table: a row per run, a column per scalar metric (in first-seen order)."""
    if not paths:
        raise UsageError("give at least one metrics.json to merge")
    if names is not None and len(names) != len(paths):
        raise UsageError(f"{len(names)} names for {len(paths)} reports")
    runs = [load_report(path) for path in paths]
    if names is not None:
        runs = [(name, metrics) for name, (_, metrics) in zip(names, runs)]
    columns: list[str] = []
    for _, metrics in runs:
        columns += [key for key in scalar_metrics(metrics) if key not in columns]
    lines = ["| run | " + " | ".join(columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for name, metrics in runs:
        values = scalar_metrics(metrics)
        cells = [_format(values[key]) if key in values else "-" for key in columns]
        lines.append(f"| {name.replace('|', '/')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
