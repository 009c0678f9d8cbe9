import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from personvl.cli import main
from personvl.data.synth import generate_world, read_world_records
from personvl.errors import PersonvlError, UsageError
from personvl.index import (BackendConfig, Encoder, ImageRejected, build_faiss_index, build_index,
                            exact_neighbours, open_image, open_index, recall_at_k, search_index)
from personvl.index.store import IndexStore
from personvl.models import create_model, load_model, save_model

TINY_MODEL = "tiny-unipt-vitb16"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("index-world") / "w"
    generate_world(out, identities=12, images_per_identity=2, cameras=3, seed=5, scene_identities=2,
                   progress=False, workers=1)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    return save_model(create_model(TINY_MODEL), tmp_path_factory.mktemp("model") / TINY_MODEL)


@pytest.fixture(scope="module")
def encoder(model_dir):
    return Encoder(load_model(model_dir))


@pytest.fixture(scope="module")
def records_index(world, model_dir, encoder, tmp_path_factory):
    """The world's records.jsonl indexed exactly, in chunks of 8."""
    out = tmp_path_factory.mktemp("idx") / "records.index"
    report = build_index(model_dir, world / "records.jsonl", out, batch_size=4, chunk_size=8,
                         progress=False, encoder=encoder)
    return out, report


def gallery_folder(world: Path, destination: Path, count: int) -> Path:
    """A plain folder holding the first ``count`` world images, in two subfolders."""
    images = sorted((world / "images").glob("*.jpg"))[:count]
    for number, image in enumerate(images):
        target = destination / ("a" if number % 2 else "b") / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
    return destination


def index_contents(directory: Path) -> tuple[np.ndarray, list[dict]]:
    store = IndexStore(directory)
    return store.read_all(store.read_manifest())


def test_build_stores_unit_embeddings_metadata_and_model_reference(records_index, world, model_dir, encoder):
    out, report = records_index
    records = read_world_records(world)
    assert report.added == report.total == len(records) == 24 and report.already_indexed == 0
    assert report.backend["backend"] == "exact" and report.recall_at_10 is None
    manifest = json.loads((out / "index.json").read_text())
    assert manifest["model"] == {"path": str(Path(model_dir).resolve())}
    assert manifest["root"] == str(world.resolve())
    assert [entry["count"] for entry in manifest["chunks"]] == [8, 8, 8]
    vectors, metadata = index_contents(out)
    assert [row["path"] for row in metadata] == [r["image"] for r in records]
    assert [(row["pid"], row["camid"], row["captions"]) for row in metadata] == \
        [(r["pid"], r["camid"], r["captions"]) for r in records]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the stored rows are the model's embeddings of those very images
    direct = encoder.encode_images([Image.open(world / r["image"]).convert("RGB") for r in records[:3]])
    np.testing.assert_allclose(vectors[:3], direct, atol=1e-5)


def test_search_by_text_image_and_id_returns_paths_scores_and_metadata(records_index, world, encoder):
    out, _ = records_index
    index = open_index(out)  # rebuilds the encoder from the stored model reference
    text = "a man in a blue jacket with a black backpack"
    hits = index.search_text(text, k=5)
    assert len(hits) == 5 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    query = encoder.encode_texts([text])[0]
    vectors, _ = index_contents(out)
    expected = np.argsort(-(vectors @ query), kind="stable")[:5]
    assert [h.id for h in hits] == list(expected)
    assert all(Path(h.path).is_file() and h.path == str(world.resolve() / h.relative_path) for h in hits)
    assert all(h.pid is not None and h.captions for h in hits)

    image_hits = index.search_image(world / hits[2].relative_path, k=3)
    assert image_hits[0].id == hits[2].id and image_hits[0].score == pytest.approx(1.0, abs=1e-4)
    similar = index.search_similar(7, k=24)
    assert similar[0].id == 7 and sorted(h.id for h in similar) == list(range(24))
    assert [h.to_dict()["path"] for h in search_index(out, text=text, k=5)] == [h.relative_path for h in hits]
    with pytest.raises(UsageError, match="no image with id 24"):
        index.search_similar(24)
    with pytest.raises(UsageError, match="exactly one"):
        search_index(out, text="x", image=world / hits[0].relative_path)


def test_rebuilding_adds_only_new_images(world, model_dir, encoder, tmp_path):
    folder = gallery_folder(world, tmp_path / "gallery", 10)
    out = tmp_path / "idx"
    first = build_index(model_dir, folder, out, batch_size=4, chunk_size=4, progress=False, encoder=encoder)
    assert (first.added, first.total) == (10, 10)
    vectors_before, metadata_before = index_contents(out)
    again = build_index(model_dir, folder, out, progress=False, encoder=encoder)
    assert (again.added, again.already_indexed, again.total) == (0, 10, 10)

    gallery_folder(world, folder, 16)  # six more images arrive
    more = build_index(model_dir, folder, out, batch_size=4, chunk_size=4, progress=False, encoder=encoder)
    assert (more.added, more.already_indexed, more.total) == (6, 10, 16)
    vectors, metadata = index_contents(out)
    paths = [row["path"] for row in metadata]
    assert len(set(paths)) == 16 and paths[:10] == [row["path"] for row in metadata_before]
    np.testing.assert_array_equal(vectors[:10], vectors_before)  # ids and rows of old images keep
    assert sorted(paths) == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))


def test_a_build_killed_between_chunks_resumes_without_duplicates(world, model_dir, encoder, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    build_index(model_dir, world / "records.jsonl", clean, batch_size=4, chunk_size=4, progress=False, encoder=encoder)

    crashed = tmp_path / "crashed"
    real_write = IndexStore.write_manifest
    commits = []

    def crash_on_third_commit(self, manifest):
        commits.append(len(manifest["chunks"]))
        if len(commits) == 3:
            raise KeyboardInterrupt  # what Ctrl-C does mid-build
        real_write(self, manifest)

    monkeypatch.setattr(IndexStore, "write_manifest", crash_on_third_commit)
    with pytest.raises(KeyboardInterrupt):
        build_index(model_dir, world / "records.jsonl", crashed, batch_size=4, chunk_size=4, progress=False,
                    encoder=encoder)
    monkeypatch.setattr(IndexStore, "write_manifest", real_write)
    assert len(IndexStore(crashed).read_manifest()["chunks"]) == 2
    assert (crashed / "chunks" / "000002.npy").exists()  # written, never committed

    report = build_index(model_dir, world / "records.jsonl", crashed, batch_size=4, chunk_size=4, progress=False,
                         encoder=encoder)
    assert (report.already_indexed, report.added, report.total) == (8, 16, 24)
    for (vectors, metadata), (expected_vectors, expected_metadata) in [(index_contents(crashed), index_contents(clean))]:
        assert metadata == expected_metadata
        np.testing.assert_allclose(vectors, expected_vectors, atol=1e-6)


KILL_SCRIPT = textwrap.dedent("""
    import os, sys
    from personvl.index import build_index
    from personvl.index.store import IndexStore

    real_replace = os.replace
    renames = []

    def die_mid_commit(source, target):
        real_replace(source, target)
        renames.append(str(target))
        # the third chunk's vectors are on disk, its metadata and the manifest are not
        if str(target).endswith("000002.npy"):
            os._exit(9)

    os.replace = die_mid_commit
    build_index(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=4, chunk_size=4, progress=False)
""")


def test_a_build_killed_mid_commit_leaves_a_valid_index_and_resumes(world, model_dir, tmp_path):
    out = tmp_path / "killed"
    result = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(model_dir), str(world / "records.jsonl"), str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, result.stderr
    manifest = IndexStore(out).read_manifest()
    assert [entry["name"] for entry in manifest["chunks"]] == ["000000", "000001"]
    assert open_index(out).size == 8  # what was committed is searchable as it is

    report = build_index(model_dir, world / "records.jsonl", out, batch_size=4, chunk_size=4, progress=False)
    assert "000002.npy" in report.removed_leftovers and (report.added, report.total) == (16, 24)
    _, metadata = index_contents(out)
    assert len({row["path"] for row in metadata}) == 24


def test_a_second_build_of_the_same_index_is_refused_while_one_runs(records_index, model_dir, world):
    out, _ = records_index
    with IndexStore(out).build_lock():
        with pytest.raises(PersonvlError, match="another build is writing this index"):
            build_index(model_dir, world / "records.jsonl", out, progress=False)


def test_another_model_or_gallery_root_cannot_be_mixed_into_an_index(records_index, world, tmp_path):
    out, _ = records_index
    other_model = save_model(create_model(TINY_MODEL), tmp_path / "other")
    with pytest.raises(UsageError, match="embeddings of another model cannot be mixed in"):
        build_index(other_model, world / "records.jsonl", out, progress=False)
    other_root = gallery_folder(world, tmp_path / "g", 2)
    with pytest.raises(UsageError, match="indexes images under"):
        build_index(json.loads((out / "index.json").read_text())["model"]["path"], other_root, out, progress=False)


def test_a_model_changed_in_place_is_detected(world, tmp_path):
    model = save_model(create_model(TINY_MODEL), tmp_path / "model")
    out = tmp_path / "idx"
    build_index(model, gallery_folder(world, tmp_path / "g", 3), out, progress=False)
    retrained = load_model(model)
    with torch.no_grad():  # only the image tower changes: text embeddings stay as they were
        for parameter in retrained.visual.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    save_model(retrained, model)
    with pytest.raises(PersonvlError, match="no longer embeds as it did"):
        open_index(out).search_text("a woman")


def test_a_registered_name_needs_weights(world, tmp_path, model_dir):
    with pytest.raises(UsageError, match="without weights has random ones"):
        build_index(TINY_MODEL, world / "images", tmp_path / "idx", progress=False)
    with pytest.raises(UsageError, match="neither a saved model directory nor a registered model name"):
        build_index("no-such-model", world / "images", tmp_path / "idx", progress=False)
    assert not (tmp_path / "idx").exists()


def test_unreadable_images_are_skipped_and_reported(world, model_dir, encoder, tmp_path):
    folder = gallery_folder(world, tmp_path / "g", 4)
    (folder / "a" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("ignored: not an image name")
    report = build_index(model_dir, folder, tmp_path / "idx", progress=False, encoder=encoder)
    assert report.unreadable == ["a/broken.jpg"] and report.total == 4
    assert "skipped 1 unreadable images: a/broken.jpg" in report.summary()


def test_a_dataset_split_is_indexed_with_its_identities(world, model_dir, encoder, tmp_path):
    report = build_index(model_dir, world / "market1501", tmp_path / "idx", dataset="market1501", split="gallery",
                         progress=False, encoder=encoder)
    _, metadata = index_contents(tmp_path / "idx")
    assert report.total == len(metadata) > 0 and "market1501 gallery split" in report.source
    assert all(row["path"].startswith("bounding_box_test/") and row["camid"] is not None for row in metadata)


def clustered_vectors(count: int, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    vectors = centres[rng.integers(0, len(centres), count)] + 0.35 * rng.standard_normal((count, centres.shape[1]))
    vectors = vectors.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_recall_report_measures_approximate_against_exact_search():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 32)).astype(np.float32)
    vectors, queries = clustered_vectors(4000, centres, rng), clustered_vectors(200, centres, rng)
    truth = exact_neighbours([vectors[:1500], vectors[1500:]], queries, 10)  # merged across blocks
    np.testing.assert_array_equal(truth, np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10])
    exact = build_faiss_index(vectors, BackendConfig("exact").resolved(len(vectors)))
    assert recall_at_k(exact, truth, queries) == 1.0
    every_list = build_faiss_index(vectors, BackendConfig("ivf", nlist=32, nprobe=32).resolved(len(vectors)))
    assert recall_at_k(every_list, truth, queries) == 1.0  # visiting all lists is exact
    one_list = build_faiss_index(vectors, BackendConfig("ivf", nlist=32, nprobe=1).resolved(len(vectors)))
    assert 0.2 < recall_at_k(one_list, truth, queries) < 1.0
    weak_graph = build_faiss_index(vectors, BackendConfig("hnsw", hnsw_m=4, ef_search=10).resolved(len(vectors)))
    strong_graph = build_faiss_index(vectors, BackendConfig("hnsw", hnsw_m=16, ef_search=200).resolved(len(vectors)))
    assert recall_at_k(weak_graph, truth, queries) < recall_at_k(strong_graph, truth, queries) >= 0.99


def test_auto_backend_picks_exact_for_small_and_ivf_for_large_galleries():
    assert BackendConfig().resolved(5_000).backend == "exact"
    large = BackendConfig().resolved(1_000_000)
    assert large.backend == "ivf" and large.params == {"nlist": 1000, "nprobe": 125}
    with pytest.raises(UsageError, match="backend must be one of"):
        BackendConfig("annoy")


@pytest.mark.parametrize("backend", ["ivf", "hnsw"])
def test_approximate_index_is_built_reported_extended_and_searched(backend, world, model_dir, encoder, tmp_path):
    folder = gallery_folder(world, tmp_path / "g", 16)
    out = tmp_path / "idx"
    shutil.rmtree(folder / "a")
    report = build_index(model_dir, folder, out, backend=backend, progress=False, encoder=encoder)
    assert report.backend["backend"] == backend and 0.0 <= report.recall_at_10 <= 1.0
    assert report.recall_queries == 8 and f"recall@10 of the {backend} index" in report.summary()
    first_file = json.loads((out / "index.json").read_text())["ann"]["file"]

    gallery_folder(world, folder, 16)  # the other eight come back
    grown = build_index(model_dir, folder, out, progress=False, encoder=encoder)  # keeps the backend
    ann = json.loads((out / "index.json").read_text())["ann"]
    assert grown.backend["backend"] == backend and ann["count"] == 16 and ann["file"] != first_file
    assert not (out / first_file).exists()
    index = open_index(out, encoder=encoder)
    assert index.backend.backend == backend and index.faiss_index.ntotal == 16
    assert index.search_similar(12, k=1)[0].id == 12
    exact = open_index(out, encoder=encoder, exact=True)
    assert exact.backend.backend == "exact"

    build_index(model_dir, folder, out, backend="exact", progress=False, encoder=encoder)
    assert json.loads((out / "index.json").read_text())["ann"] is None and not list(out.glob("ann-*"))


def test_open_image_refuses_bombs_non_images_and_corrupt_files(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("L", (6_000, 6_000)).save(bomb, optimize=True)  # 36 Mpx in about 40 KB
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(ImageRejected, match="more than the limit of 25,000,000") as rejected:
        open_image(bomb, max_pixels=25_000_000)
    assert rejected.value.reason == "too_many_pixels"
    with pytest.raises(ImageRejected, match="not an image") as rejected:
        open_image(b"%PDF-1.4 definitely not a picture")
    assert rejected.value.reason == "not_an_image"
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 128), "red").save(good)
    with pytest.raises(ImageRejected, match="cannot decode") as rejected:
        open_image(good.read_bytes()[:300])
    assert rejected.value.reason == "corrupt"
    assert open_image(good).size == (64, 128)


def test_cli_builds_searches_and_describes_an_index(world, model_dir, tmp_path, capsys):
    out = tmp_path / "cli.index"
    assert main(["index", "build", str(model_dir), str(world / "records.jsonl"), "--out", str(out),
                 "--no-progress", "--backend", "hnsw", "--ef-search", "64"]) == 0
    printed = capsys.readouterr().out
    assert "24 images (24 added, 0 already indexed)" in printed and "recall@10 of the hnsw index" in printed

    assert main(["index", "search", str(out), "--text", "a woman in a black dress", "-k", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["rank", "score", "id", "pid"] and len(table) == 4
    assert all(Path(line.split()[5]).is_file() for line in table[1:])

    assert main(["index", "search", str(out), "--image", str(world / "images" / "00003_01.jpg"), "-k", "2",
                 "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["path"] == str(world.resolve() / "images" / "00003_01.jpg") and hits[0]["pid"] == 3

    assert main(["index", "info", str(out)]) == 0
    assert "hnsw" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["index", "search", str(tmp_path), "--text", "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an index (no index.json)" in err
    assert main(["index", "build", str(tmp_path), str(tmp_path / "missing"), "--out", str(tmp_path / "i")]) == 1
    assert "no such file or directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["index", "search", str(tmp_path), "--text", "x", "--image", "y.jpg"])
    assert exit_info.value.code == 2
