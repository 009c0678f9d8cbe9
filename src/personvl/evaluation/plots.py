"""Evaluation plots written as PNG files (matplotlib's Agg canvas; no display needed and the
global pyplot state is left alone).

Images may be given as file paths, PIL images or H x W x 3 uint8 arrays.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from personvl.errors import PersonvlError, UsageError

CORRECT_COLOUR = "#1a9850"
WRONG_COLOUR = "#d73027"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
    except OSError as exc:
        raise PersonvlError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _image(value: Any) -> np.ndarray:
    from PIL import Image

    if isinstance(value, (str, os.PathLike)):
        try:
            with Image.open(value) as opened:
                return np.asarray(opened.convert("RGB"))
        except OSError as exc:
            raise PersonvlError(f"cannot read image {value}: {exc}") from None
    if isinstance(value, Image.Image):
        return np.asarray(value.convert("RGB"))
    array = np.asarray(value)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise UsageError(f"an image must be H x W x 3, got shape {array.shape}")
    return array[..., :3]


def plot_cmc(curves: Sequence[float] | Mapping[str, Sequence[float]], path: str | os.PathLike,
             title: str = "CMC") -> Path:
    """Matching rate (percent) against rank; one curve, or several by label."""
    if not isinstance(curves, Mapping):
        curves = {"": curves}
    if not curves or any(len(curve) == 0 for curve in curves.values()):
        raise UsageError("a CMC curve is empty (no query had a match?)")
    figure = _figure(5.5, 4)
    axes = figure.add_subplot()
    for label, curve in curves.items():
        ranks = np.arange(1, len(curve) + 1)
        axes.plot(ranks, curve, marker="o" if len(curve) <= 20 else None, markersize=3, label=label or None)
    axes.set(xlabel="rank", ylabel="matching rate (%)", title=title, ylim=(0, 100.5), xlim=(1, None))
    axes.grid(alpha=0.3)
    if any(curves):
        axes.legend(loc="lower right")
    figure.tight_layout()
    return _save(figure, path)


def _check_ranking(ranked: Any, correct: Any, queries: int, gallery: int) -> tuple[np.ndarray, np.ndarray]:
    ranked, correct = np.asarray(ranked), np.asarray(correct, dtype=bool)
    if ranked.ndim != 2 or ranked.shape != correct.shape:
        raise UsageError(f"ranked_indices {ranked.shape} and correct {correct.shape} must be the same 2-D shape")
    if ranked.shape[0] != queries:
        raise UsageError(f"ranked_indices has {ranked.shape[0]} rows for {queries} queries")
    if ranked.size and (ranked.min() < 0 or ranked.max() >= gallery):
        raise UsageError(f"ranked_indices must index the {gallery} gallery images")
    return ranked, correct


def _framed(axes, image: np.ndarray, colour: str | None, label: str | None) -> None:
    axes.imshow(image)
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(colour is not None)
        if colour is not None:
            spine.set_color(colour)
            spine.set_linewidth(4)
    if label:
        axes.set_title(label, fontsize=8)


def _ranking_grid(heads: Sequence[Any], gallery_images: Sequence[Any], ranked: np.ndarray, correct: np.ndarray,
                  path: str | os.PathLike, caption_heads: bool) -> Path:
    rows, columns = ranked.shape
    extra = 0 if caption_heads else 1
    height_per_row = 2.9 if caption_heads else 2.3
    figure = _figure(1.25 * (columns + extra) + 0.3, height_per_row * rows)
    grid = figure.add_gridspec(rows * (2 if caption_heads else 1), columns + extra,
                               height_ratios=[0.35, 1] * rows if caption_heads else None)
    for row in range(rows):
        if caption_heads:
            text_axes = figure.add_subplot(grid[2 * row, :])
            text_axes.axis("off")
            text_axes.text(0.0, 0.5, "\n".join(textwrap.wrap(str(heads[row]), width=14 * columns))
                           or "(empty caption)", fontsize=9, va="center", ha="left", wrap=True)
            image_row = 2 * row + 1
        else:
            image_row = row
            _framed(figure.add_subplot(grid[image_row, 0]), _image(heads[row]), "#333333", "query")
        for column in range(columns):
            axes = figure.add_subplot(grid[image_row, column + extra])
            hit = bool(correct[row, column])
            _framed(axes, _image(gallery_images[int(ranked[row, column])]),
                    CORRECT_COLOUR if hit else WRONG_COLOUR, f"{column + 1}")
    height = figure.get_figheight()
    figure.subplots_adjust(left=0.02, right=0.98, top=1 - 0.3 / height, bottom=0.1 / height, wspace=0.08,
                           hspace=0.25)
    return _save(figure, path)


def plot_retrieval_grid(captions: Sequence[str], gallery_images: Sequence[Any], ranked_indices: Any, correct: Any,
                        path: str | os.PathLike) -> Path:
    """Text-to-image results: each caption over its top-ranked gallery images, correct matches
    framed green and wrong ones red (see :func:`personvl.evaluation.ranked_gallery`)."""
    ranked, hits = _check_ranking(ranked_indices, correct, len(captions), len(gallery_images))
    return _ranking_grid(list(captions), gallery_images, ranked, hits, path, caption_heads=True)


def plot_reid_grid(query_images: Sequence[Any], gallery_images: Sequence[Any], ranked_indices: Any, correct: Any,
                   path: str | os.PathLike) -> Path:
    """Re-ID results: each query image followed by its top-ranked gallery images, correct
    matches framed green and wrong ones red."""
    ranked, hits = _check_ranking(ranked_indices, correct, len(query_images), len(gallery_images))
    return _ranking_grid(list(query_images), gallery_images, ranked, hits, path, caption_heads=False)


def plot_attribute_accuracy(accuracies: Sequence[float], attribute_names: Sequence[str], path: str | os.PathLike,
                            title: str = "Per-attribute accuracy") -> Path:
    """Horizontal bars, one per attribute, in percent (e.g. ``per_attribute_accuracy`` or
    ``per_attribute_mA`` from :func:`personvl.evaluation.attribute_metrics`)."""
    if len(accuracies) != len(attribute_names) or not len(accuracies):
        raise UsageError(f"{len(accuracies)} accuracies for {len(attribute_names)} attribute names")
    figure = _figure(6.5, 0.8 + 0.24 * len(accuracies))
    axes = figure.add_subplot()
    positions = np.arange(len(accuracies))
    values = np.asarray(accuracies, dtype=float)
    axes.barh(positions, values, color="#4575b4")
    for position, value in zip(positions, values):
        axes.text(min(value, 100) + 1, position, f"{value:.1f}", va="center", fontsize=7)
    axes.set_yticks(positions, labels=list(attribute_names), fontsize=8)
    axes.invert_yaxis()
    axes.set(xlim=(0, 110), xlabel="accuracy (%)", title=title)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def part_palette(num_classes: int) -> np.ndarray:
    """Distinct RGB colours per part class; class 0 (background) black."""
    from matplotlib import colormaps

    # tab20 alternates strong and pale shades: use the strong ten first.
    strong_first = np.r_[np.arange(0, 20, 2), np.arange(1, 20, 2)]
    colours = colormaps["tab20"](strong_first[np.arange(max(num_classes - 1, 1)) % 20])[:, :3]
    return np.vstack([[0.0, 0.0, 0.0], colours])[:num_classes]


def _overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != image.shape[:2]:
        raise UsageError(f"a parsing map of shape {labels.shape} does not match its image of shape {image.shape[:2]}")
    colours = palette[np.clip(labels, 0, len(palette) - 1)]
    blended = image / 255.0 * (1 - alpha) + colours * alpha
    blended[labels == 0] = image[labels == 0] / 255.0          # background shows the image
    blended[labels >= len(palette)] = image[labels >= len(palette)] / 255.0   # ignored pixels too
    return np.clip(blended, 0, 1)


def plot_parsing_overlays(images: Sequence[Any], predictions: Sequence[Any], path: str | os.PathLike,
                          targets: Sequence[Any] | None = None, part_names: Sequence[str] | None = None,
                          alpha: float = 0.55) -> Path:
    """One row per image: the image, the predicted parts over it, and the ground truth when
    given; a legend names the part colours."""
    if len(images) != len(predictions) or not len(images):
        raise UsageError(f"{len(predictions)} predictions for {len(images)} images")
    if targets is not None and len(targets) != len(images):
        raise UsageError(f"{len(targets)} targets for {len(images)} images")
    num_classes = len(part_names) if part_names else int(max(np.asarray(p).max() for p in predictions)) + 1
    palette = part_palette(num_classes)
    columns = 3 if targets is not None else 2
    figure = _figure(2.2 * columns + (1.8 if part_names else 0), 2.9 * len(images))
    for row, image in enumerate(images):
        picture = _image(image)
        panels = [(picture / 255.0, "image"), (_overlay(picture, predictions[row], palette, alpha), "prediction")]
        if targets is not None:
            panels.append((_overlay(picture, targets[row], palette, alpha), "ground truth"))
        for column, (content, label) in enumerate(panels):
            axes = figure.add_subplot(len(images), columns, row * columns + column + 1)
            axes.imshow(content)
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(label, fontsize=9)
    if part_names:
        from matplotlib.patches import Patch

        handles = [Patch(color=palette[i], label=name) for i, name in enumerate(part_names)]
        figure.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
        figure.subplots_adjust(right=1 - 1.8 / (2.2 * columns + 1.8))
    return _save(figure, path)
