"""Person search fine-tuning end to end on a synthetic world's PRW frames (the real reader)."""

import json

import numpy as np
import pytest
import yaml

from personvl.data import load_dataset
from personvl.data.synth import generate_world
from personvl.errors import PersonvlError, UsageError
from personvl.evaluation import person_search_metrics
from personvl.tasks import person_search
from personvl.tasks.person_search import SearchConfig, evaluate, finetune, load_search_config, search_inputs

CONFIG = "configs/finetune/search_tiny.yaml"
FAST = ["trainer.progress_bar=false", "evaluation.plot_queries=2"]


# One intra-op thread: two threads on two shared cores spend more time waiting than computing.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scene_world(tmp_path_factory):
    """A world with more people in its scenes than the shared small one: 16 identities per
    split, each in 3 frames."""
    out = tmp_path_factory.mktemp("scenes") / "w"
    generate_world(out, workers=2, progress=False, preview=False, identities=40, images_per_identity=2, cameras=4,
                   seed=5, scene_identities=16, scene_appearances=3, scene_width=320, scene_height=180)
    return out / "prw"


def random_ranking_map(root, detector=None, det_thresh=0.5, seeds=20):
    """mAP of ranking boxes at random (random features), averaged over seeds: the ground-truth
    boxes, or ``detector``'s boxes scoring at least ``det_thresh``, so that chance counts only
    the people the detector found."""
    from personvl.evaluation import SceneDetections
    from personvl.tasks.person_search import detect

    inputs = search_inputs(load_dataset("prw", root, "query"), load_dataset("prw", root, "gallery"))
    names = [scene.name for scene in inputs.scenes]
    if detector is None:
        found = [(scene.boxes, np.ones(len(scene.boxes))) for scene in inputs.scenes]
    else:
        found = detect(detector, [inputs.frame_paths[n] for n in names], min_score=det_thresh)
    values = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        detections = {n: SceneDetections(boxes, scores, rng.normal(size=(len(boxes), 16)))
                      for n, (boxes, scores) in zip(names, found)}
        values.append(person_search_metrics(rng.normal(size=(len(inputs.queries), 16)), inputs.queries,
                                            inputs.scenes, detections, det_thresh)["mAP"])
    return float(np.mean(values))


def test_search_with_ground_truth_boxes_beats_random_ranking(scene_world, tmp_path):
    out = tmp_path / "run"
    summary = finetune(CONFIG, [f"data.root={scene_world}", f"output_dir={out}", "detector.name=gt",
                                "trainer.max_steps=60", *FAST], echo=lambda *a: None)
    chance = random_ranking_map(scene_world)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["detector"].startswith("gt") and summary["steps"] == 60
    assert metrics["detection_recall"] == 100.0
    # Random ranking of these boxes scores about 11 mAP; the fine-tuned tiny encoder about 23.
    assert metrics["mAP"] >= 1.6 * chance and metrics["mAP"] >= chance + 8, (metrics["mAP"], chance)
    assert (out / "plots" / "search_results.png").stat().st_size > 0
    assert yaml.safe_load((out / "config.yaml").read_text())["detector"]["name"] == "gt"
    assert (out / "checkpoints" / "last.ckpt").exists() and not (out / "model" / "heads").exists()
    # The saved encoder gives the same figures through evaluate().
    again = evaluate(out / "model", "prw", scene_world, detector="gt")
    assert again["mAP"] == pytest.approx(metrics["mAP"]) and again["detector"].startswith("gt")
    with pytest.raises(UsageError, match="no detector"):
        evaluate(out / "model", "prw", scene_world)
    # A finished run is never overwritten, even one that trained nothing (no checkpoint).
    untrained = [f"data.root={scene_world}", f"output_dir={tmp_path / 'as_given'}", "detector.name=gt",
                 "trainer.max_steps=0", "evaluation.plot_queries=0"]
    finetune(CONFIG, untrained, echo=lambda *a: None)
    with pytest.raises(PersonvlError, match="already holds a finished run"):
        finetune(CONFIG, untrained, echo=lambda *a: None)


def test_search_with_a_trained_detector_beats_random_ranking_of_its_boxes(scene_world, tmp_path):
    out = tmp_path / "run"
    finetune(CONFIG, [f"data.root={scene_world}", f"output_dir={out}", "detector.max_steps=400",
                      "trainer.max_steps=60", "evaluation.det_thresh=0.0", *FAST], echo=lambda *a: None)
    model = out / "model"
    assert (model / "heads" / "search.safetensors").exists() and (model / "heads" / "search.json").exists()
    assert (out / "detector" / "checkpoints" / "last.ckpt").exists()
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["detector"] == "fasterrcnn_mobilenet_v3_large_fpn"
    assert metrics["detection_recall"] >= 30.0, metrics     # a detector trained from scratch finds people
    # Random features on the same detections score about 3 mAP; the two trained stages about 14.
    chance = random_ranking_map(scene_world, person_search.load_detector(model), det_thresh=0.0)
    assert metrics["mAP"] >= 2 * chance and metrics["mAP"] >= chance + 5, (metrics["mAP"], chance)
    # The saved detector is found beside the encoder and reproduces the run's figures.
    again = evaluate(model, "prw", scene_world, det_thresh=0.0)
    assert again["detector"].startswith("fasterrcnn_mobilenet_v3_large_fpn")
    assert again["detection_recall"] == pytest.approx(metrics["detection_recall"])
    assert again["mAP"] == pytest.approx(metrics["mAP"], abs=1e-6)


def test_the_test_frames_are_read_only_after_training(scene_world, tmp_path, monkeypatch):
    import personvl.data

    reads = []
    real = personvl.data.load_dataset

    def recording(name, root, split=None, **kwargs):
        reads.append(split)
        return real(name, root, split, **kwargs)

    trained = []
    import personvl.models

    save_model = personvl.models.save_model

    def saving(*args, **kwargs):           # training is over once the model is saved
        trained.append(list(reads))
        return save_model(*args, **kwargs)

    monkeypatch.setattr(personvl.data, "load_dataset", recording)
    monkeypatch.setattr(personvl.models, "save_model", saving)
    finetune(CONFIG, [f"data.root={scene_world}", f"output_dir={tmp_path / 'run'}", "detector.name=gt",
                      "trainer.max_steps=2", "evaluation.plot_queries=0"], echo=lambda *a: None)
    assert trained == [["train"]]
    assert reads == ["train", "query", "gallery"]


def test_config_errors_and_detector_choice(tmp_path):
    with pytest.raises(UsageError, match="detector.name must be one of"):
        load_search_config(CONFIG, ["detector.name=yolo"])
    with pytest.raises(UsageError, match="data.train_split='gallery' is the split"):
        finetune(CONFIG, ["data.train_split=gallery", f"output_dir={tmp_path / 'run'}"])
    paper = load_search_config("configs/finetune/search_paper.yaml")
    assert isinstance(paper, SearchConfig) and paper.model.name == "plip-rn50"
    # The re-ID stage has the strong baseline's own optimiser; the detector keeps SGD.
    assert (paper.optim.name, paper.optim.lr) == ("adam", 0.00035)
    assert (paper.detector.optim.name, paper.detector.optim.lr) == ("sgd", 0.01)
    assert load_search_config(CONFIG, ["evaluation.gallery_size=500"]).evaluation.options == {"protocol": "TestG500"}
    with pytest.raises(UsageError, match="gallery_size must be one of 50, 100, 500, 1000, 2000, 4000"):
        load_search_config(CONFIG, ["evaluation.gallery_size=300"])
    with pytest.raises(UsageError, match="no detector"):
        evaluate("tiny-plip-rn50", "prw", tmp_path)
