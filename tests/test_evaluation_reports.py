"""Reports (table + metrics.json, merged Markdown, the ``report`` command) and PNG plots."""

import json

import numpy as np
import pytest
from PIL import Image

from personvl import PersonvlError
from personvl.cli import main
from personvl.evaluation import (load_report, merge_reports, plot_attribute_accuracy, plot_cmc,
                                 plot_parsing_overlays, plot_reid_grid, plot_retrieval_grid, write_report)


def test_write_report_prints_a_table_and_writes_metrics_json(tmp_path, capsys):
    metrics = {"R1": 61.25, "mAP": float("nan"), "valid_queries": 12, "cmc": [61.25, 70.0]}
    path = write_report(metrics, tmp_path / "run_a", task="reid")
    printed = capsys.readouterr().out
    assert "run_a (reid)" in printed and "61.25" in printed and "valid_queries" in printed
    content = json.loads(path.read_text())
    assert content == {"name": "run_a", "task": "reid",
                       "metrics": {"R1": 61.25, "mAP": None, "valid_queries": 12, "cmc": [61.25, 70.0]}}
    name, loaded = load_report(path)
    assert name == "run_a" and np.isnan(loaded["mAP"]) and loaded["cmc"] == [61.25, 70.0]


def test_merge_reports_makes_one_markdown_table(tmp_path, capsys):
    write_report({"R1": 50.0, "mAP": 40.0}, tmp_path / "small")
    (tmp_path / "large").mkdir()
    (tmp_path / "large" / "metrics.json").write_text(json.dumps({"R1": 70.5, "mINP": 20.25}))
    capsys.readouterr()
    table = merge_reports([tmp_path / "small" / "metrics.json", tmp_path / "large" / "metrics.json"])
    assert table.splitlines() == ["| run | R1 | mAP | mINP |", "|---|---:|---:|---:|",
                                  "| small | 50.00 | 40.00 | - |", "| large | 70.50 | - | 20.25 |"]


def test_report_merge_command_writes_the_table(tmp_path, capsys):
    for name, value in (("a", 1.0), ("b", 2.0)):
        write_report({"mA": value}, tmp_path / name)
    capsys.readouterr()
    out = tmp_path / "table.md"
    assert main(["report", "merge", str(tmp_path / "a" / "metrics.json"), str(tmp_path / "b" / "metrics.json"),
                 "--out", str(out), "--names", "first,second"]) == 0
    assert out.read_text().splitlines()[2:] == ["| first | 1.00 |", "| second | 2.00 |"]
    assert main(["report", "merge", str(tmp_path / "missing.json")]) == 1
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PersonvlError, match="bad.json is not valid JSON"):
        load_report(tmp_path / "bad.json")


def assert_png(path, min_size, max_size):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert min_size[0] <= width <= max_size[0] and min_size[1] <= height <= max_size[1], image.size
        # Not a blank canvas: several distinct colours were drawn.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 10


def person(rng, colour):
    image = np.full((96, 48, 3), 235, dtype=np.uint8)
    image[10:90, 12:36] = colour
    image[10:25, 16:32] = (230, 190, 160)
    return np.clip(image.astype(int) + rng.integers(-10, 10, image.shape), 0, 255).astype(np.uint8)


def test_plots_write_readable_pngs(tmp_path):
    rng = np.random.default_rng(0)
    gallery = [person(rng, c) for c in rng.integers(0, 255, (12, 3))]
    gallery_path = tmp_path / "g0.png"
    Image.fromarray(gallery[0]).save(gallery_path)
    ranked = np.array([[(q + i) % 12 for i in range(10)] for q in range(2)])
    correct = ranked % 3 == 0

    assert_png(plot_cmc({"baseline": np.linspace(40, 90, 50), "re-ranked": np.linspace(50, 95, 50)},
                        tmp_path / "cmc.png"), (400, 300), (800, 600))
    assert_png(plot_retrieval_grid(["a woman in a red coat with a black backpack and white shoes", "a man"],
                                   [gallery_path] + gallery[1:], ranked, correct, tmp_path / "t2i.png"),
               (900, 400), (2000, 900))
    assert_png(plot_reid_grid(gallery[:2], gallery, ranked, correct, tmp_path / "reid.png"), (900, 300), (2000, 700))
    names = [f"attribute {i}" for i in range(26)]
    assert_png(plot_attribute_accuracy(rng.uniform(50, 100, 26), names, tmp_path / "attributes.png"),
               (500, 500), (900, 1000))
    masks = [np.zeros((96, 48), dtype=int) for _ in range(2)]
    for i, mask in enumerate(masks):
        mask[10:25, 16:32], mask[25:60, 12:36], mask[60:90, 12:36] = 1, 2 + i, 3
    assert_png(plot_parsing_overlays(gallery[:2], masks, tmp_path / "parsing.png", targets=masks[::-1],
                                     part_names=["background", "head", "upper", "lower"]), (600, 450), (1200, 800))


def test_plot_inputs_are_checked(tmp_path):
    from personvl import UsageError

    with pytest.raises(UsageError, match="ranked_indices must index the 3 gallery images"):
        plot_reid_grid([np.zeros((4, 4, 3), np.uint8)], [np.zeros((4, 4, 3), np.uint8)] * 3, [[5]], [[True]],
                       tmp_path / "x.png")
    with pytest.raises(UsageError, match="a CMC curve is empty"):
        plot_cmc([], tmp_path / "x.png")
