"""Attribute, parsing and person-search metrics on hand-computed cases."""

import numpy as np
import pytest
import torch

from personvl import UsageError
from personvl.evaluation import (AttributeWarning, NoMatchWarning, Scene, SceneDetections, SearchQuery,
                                 attribute_metrics, detection_metrics, parsing_metrics, person_search_metrics)
from personvl.evaluation.person_search import box_iou, small_box_iou_threshold

# --- attributes ---------------------------------------------------------------------------

PROBABILITIES = np.array([[0.9, 0.2, 0.6], [0.4, 0.7, 0.1], [0.8, 0.1, 0.5]])
LABELS = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])


def test_attribute_metrics_by_hand():
    metrics = attribute_metrics(PROBABILITIES, LABELS, attribute_names=["male", "hat", "bag"])
    # 0.5 is not above the threshold, so image 2 predicts only attribute 0.
    # mA: male (2/2 + 1/1)/2 = 1, hat (1/2 + 1/1)/2 = .75, bag (1/1 + 2/2)/2 = 1.
    assert metrics["mA"] == pytest.approx((1 + 0.75 + 1) / 3 * 100)
    # Per image: (acc, prec, rec) = (1, 1, 1), (1, 1, 1), (1/2, 1, 1/2).
    assert metrics["accuracy"] == pytest.approx(2.5 / 3 * 100)
    assert metrics["precision"] == pytest.approx(100.0)
    assert metrics["recall"] == pytest.approx(2.5 / 3 * 100)
    precision, recall = 1.0, 2.5 / 3
    assert metrics["F1"] == pytest.approx(2 * precision * recall / (precision + recall) * 100)
    assert metrics["per_attribute_accuracy"] == pytest.approx([100.0, 200 / 3, 100.0])
    assert metrics["attribute_names"] == ["male", "hat", "bag"]


def test_attribute_without_positives_counts_zero_for_that_half_and_warns():
    with pytest.warns(AttributeWarning, match="hat"):
        metrics = attribute_metrics([[0.1, 0.9], [0.2, 0.8]], [[0, 1], [0, 1]], attribute_names=["hat", "male"])
    # hat: no positive -> (0 + 2/2)/2 = .5; male: no negative -> (2/2 + 0)/2 = .5.
    assert metrics["mA"] == pytest.approx(50.0)
    # Image with nothing labelled and nothing predicted for hat does not matter: male is right.
    assert metrics["accuracy"] == pytest.approx(100.0)


def test_attribute_inputs_are_checked():
    with pytest.raises(UsageError, match="labels must be 0 or 1"):
        attribute_metrics(PROBABILITIES, LABELS * 2)
    with pytest.raises(UsageError, match=r"labels has shape \(3, 2\) but probabilities has shape \(3, 3\)"):
        attribute_metrics(PROBABILITIES, LABELS[:, :2])
    with pytest.raises(UsageError, match="probabilities contains NaN"):
        attribute_metrics(np.full((1, 2), np.nan), [[0, 1]])
    with pytest.raises(UsageError, match="probabilities must be a non-empty 2-D array"):
        attribute_metrics(np.zeros((0, 3)), np.zeros((0, 3)))


# --- parsing --------------------------------------------------------------------------------

def test_parsing_metrics_by_hand_with_ignored_pixels():
    predictions = np.array([[0, 1], [1, 1]])
    targets = np.array([[0, 1], [255, 0]])
    metrics = parsing_metrics(predictions, targets, num_classes=2)
    # Counted pixels: (t0, p0), (t1, p1), (t0, p1). IoU0 = 1/2, IoU1 = 1/2.
    assert metrics["per_class_iou"] == pytest.approx([50.0, 50.0])
    assert metrics["mIoU"] == pytest.approx(50.0)
    assert metrics["pixel_accuracy"] == pytest.approx(200 / 3)


def test_parsing_class_absent_everywhere_is_left_out_of_the_mean():
    metrics = parsing_metrics(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [255, 0]]), num_classes=3)
    assert np.isnan(metrics["per_class_iou"][2]) and metrics["mIoU"] == pytest.approx(50.0)


def test_parsing_accumulates_maps_of_different_sizes():
    rng = np.random.default_rng(0)
    maps = [(rng.integers(0, 4, (5, 7)), rng.integers(0, 4, (5, 7))), (rng.integers(0, 4, (3, 2)), rng.integers(0, 4, (3, 2)))]
    separate = parsing_metrics([p for p, _ in maps], [t for _, t in maps], num_classes=4)
    flat = parsing_metrics(np.concatenate([p.ravel() for p, _ in maps])[None],
                           np.concatenate([t.ravel() for _, t in maps])[None], num_classes=4)
    assert separate == flat


def test_parsing_inputs_are_checked():
    with pytest.raises(UsageError, match="predictions has class 7 outside 0..3"):
        parsing_metrics(np.full((2, 2), 7), np.zeros((2, 2), dtype=int), num_classes=4)
    with pytest.raises(UsageError, match="predictions must be integer class maps"):
        parsing_metrics(np.zeros((2, 2)), np.zeros((2, 2), dtype=int), num_classes=4)
    with pytest.raises(UsageError, match="targets has 1 maps but predictions has 2"):
        parsing_metrics([np.zeros((2, 2), int)] * 2, [np.zeros((2, 2), int)], num_classes=4)


# --- person search ------------------------------------------------------------------------

def unit(cosine):
    """A 2-D feature whose cosine with the query [1, 0] is ``cosine``."""
    return [cosine, np.sqrt(1 - cosine**2)]


SCENES = [
    Scene("s0", [[0, 0, 50, 100]], [1], camid=0),                          # the query's frame
    Scene("s1", [[10, 10, 60, 110], [100, 10, 150, 110]], [1, 2], camid=1),
    Scene("s2", [[0, 0, 50, 100]], [2], camid=1),
    Scene("s3", [[200, 200, 210, 215]], [1], camid=2),                      # a 10 x 15 box
    Scene("s4", [[0, 0, 40, 80]], [1], camid=2),                            # nothing detected
]
DETECTIONS = {
    "s1": SceneDetections([[10, 10, 60, 110], [100, 10, 150, 110]], [0.9, 0.95], [unit(0.8), unit(0.9)]),
    "s2": SceneDetections([[0, 0, 50, 100]], [0.8], [unit(0.95)]),
    "s3": SceneDetections([[203, 203, 213, 218], [200, 200, 210, 215]], [0.7, 0.3], [unit(0.5), unit(0.99)]),
}


def test_small_box_rule_lowers_the_iou_threshold():
    box = np.array([200, 200, 210, 215])
    assert small_box_iou_threshold(box) == pytest.approx(150 / (20 * 25))
    assert small_box_iou_threshold(np.array([0, 0, 50, 100])) == 0.5
    assert box_iou(box[None], np.array([[203, 203, 213, 218]]))[0, 0] == pytest.approx(84 / 216)


def test_person_search_prw_style_gallery_by_hand():
    metrics = person_search_metrics([[1.0, 0.0]], [SearchQuery("s0", 1, camid=0)], SCENES, DETECTIONS)
    # Frames showing identity 1: s1, s3, s4. True positives: s1's first box (IoU 1) and s3's
    # box (IoU .39, enough for a small box); s3's exact box scores below det_thresh.
    # Ranked by similarity: s2 .95, s1 .9, s1 .8 (hit), s3 .5 (hit) -> hits at ranks 3 and 4.
    assert metrics["mAP"] == pytest.approx((1 / 3 + 2 / 4) / 2 * (2 / 3) * 100)
    assert metrics["top1"] == 0.0 and metrics["R5"] == 100.0
    # Detection: 6 boxes, 3 found (s1 both, s2); s3's detection is below IoU .5; all hits
    # score above the miss, so AP over the list is 1, times the recall 1/2.
    assert metrics["detection_recall"] == pytest.approx(50.0)
    assert metrics["detection_AP"] == pytest.approx(50.0)
    assert detection_metrics(SCENES, DETECTIONS)["detection_AP"] == pytest.approx(50.0)


def test_person_search_cuhk_style_protocol_gallery():
    query = SearchQuery("s0", 1, gallery=("s1", "s2"))
    metrics = person_search_metrics(torch.tensor([[2.0, 0.0]]), [query], SCENES, DETECTIONS)
    # Only s1 shows identity 1; its hit ranks third behind .95 and .9.
    assert metrics["mAP"] == pytest.approx(100 / 3) and metrics["top1"] == 0.0


def test_person_search_other_cameras_only():
    metrics = person_search_metrics([[1.0, 0.0]], [SearchQuery("s0", 1, camid=1)], SCENES, DETECTIONS,
                                    exclude_same_camera=True)
    # Camera 1 frames (s1, s2) leave; s3 (hit, rank 1) and s4 (missed) remain.
    assert metrics["mAP"] == pytest.approx(1.0 * (1 / 2) * 100) and metrics["top1"] == 100.0


def test_person_search_query_whose_identity_is_nowhere_is_skipped():
    queries = [SearchQuery("s0", 1), SearchQuery("s2", 77)]
    with pytest.warns(NoMatchWarning, match="1 queries have an identity"):
        metrics = person_search_metrics([[1.0, 0.0], [0.0, 1.0]], queries, SCENES, DETECTIONS)
    assert metrics["valid_queries"] == 1 and metrics["queries"] == 2


def test_person_search_inputs_are_checked():
    with pytest.raises(UsageError, match="queries has 1 entries but query_features has 2 rows"):
        person_search_metrics(np.ones((2, 2)), [SearchQuery("s0", 1)], SCENES, DETECTIONS)
    with pytest.raises(UsageError, match="frame 'nowhere' is not among the scenes"):
        person_search_metrics([[1.0, 0.0]], [SearchQuery("nowhere", 1)], SCENES, DETECTIONS)
    with pytest.raises(UsageError, match="detection features have 2 dimensions but query_features has 3"):
        person_search_metrics([[1.0, 0.0, 0.0]], [SearchQuery("s0", 1)], SCENES, DETECTIONS)
