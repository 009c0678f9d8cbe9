"""Streaming evaluators give the same figures as the metric functions on the whole set."""

import numpy as np
import pytest
import torch

from personvl import UsageError
from personvl.evaluation import (AttributeEvaluator, ParsingEvaluator, PersonSearchEvaluator, ReidEvaluator,
                                 RetrievalEvaluator, SceneDetections, attribute_metrics, parsing_metrics,
                                 person_search_metrics, reid_metrics, retrieval_metrics)
from personvl.evaluation.evaluators import GrowingBuffer

from test_evaluation_tasks import DETECTIONS, SCENES, unit  # noqa: E402  (shared hand-made scenes)


def batches(count, size):
    return [slice(start, min(count, start + size)) for start in range(0, count, size)]


def reid_data(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, 6))
    query_pids, gallery_pids = rng.integers(0, 10, 23), rng.integers(0, 10, 71)
    query = centres[query_pids] + rng.standard_normal((23, 6))
    gallery = centres[gallery_pids] + rng.standard_normal((71, 6))
    return (query.astype(np.float32), gallery.astype(np.float32), query_pids, gallery_pids,
            rng.integers(0, 3, 23), rng.integers(0, 3, 71))


def test_reid_evaluator_streams_queries_then_gallery_with_num_query():
    query, gallery, query_pids, gallery_pids, query_camids, gallery_camids = reid_data()
    features = np.concatenate([query, gallery])
    pids, camids = np.concatenate([query_pids, gallery_pids]), np.concatenate([query_camids, gallery_camids])
    evaluator = ReidEvaluator(metric="euclidean", num_query=len(query))
    for part in batches(len(features), 16):          # batches straddle the query/gallery border
        evaluator.process({"pids": torch.from_numpy(pids[part]), "camids": camids[part]},
                          torch.from_numpy(features[part]))
    expected = reid_metrics(query, gallery, query_pids, gallery_pids, query_camids, gallery_camids, metric="euclidean")
    assert evaluator.evaluate() == expected
    evaluator.reset()
    with pytest.raises(UsageError, match="no query items were processed"):
        evaluator.evaluate()


def test_retrieval_evaluator_with_is_query_flags_per_batch():
    query, gallery, query_pids, gallery_pids, _, _ = reid_data(1)
    evaluator = RetrievalEvaluator()
    for part in batches(len(gallery), 32):
        evaluator.process({"pids": gallery_pids[part], "is_query": False}, {"features": gallery[part]})
    for part in batches(len(query), 5):
        evaluator.process({"pids": query_pids[part], "is_query": True}, {"features": query[part]})
    assert evaluator.evaluate() == retrieval_metrics(query, gallery, query_pids, gallery_pids)


def test_evaluators_refuse_malformed_batches():
    evaluator = RetrievalEvaluator()
    with pytest.raises(UsageError, match="give batch\\['is_query'\\] or num_query"):
        evaluator.process({"pids": [1, 2]}, torch.ones(2, 3))
    with pytest.raises(UsageError, match="batch\\['pids'\\] has 1 entries for 2 feature rows"):
        evaluator.process({"pids": [1], "is_query": True}, torch.ones(2, 3))
    with pytest.raises(UsageError, match="batch has no 'camids' entry"):
        ReidEvaluator(num_query=1).process({"pids": [1]}, torch.ones(1, 3))


def test_attribute_evaluator_accumulates_counts_and_takes_logits():
    rng = np.random.default_rng(2)
    probabilities, labels = rng.random((50, 4)), rng.integers(0, 2, (50, 4))
    evaluator = AttributeEvaluator(attribute_names=list("abcd"))
    for part in batches(50, 12):
        logits = torch.logit(torch.from_numpy(probabilities[part]))
        evaluator.process({"attributes": labels[part]}, {"logits": logits})
    expected = attribute_metrics(probabilities, labels, attribute_names=list("abcd"))
    result = evaluator.evaluate()
    for key in ("mA", "accuracy", "precision", "recall", "F1"):
        assert result[key] == pytest.approx(expected[key], abs=1e-9)


def test_parsing_evaluator_argmaxes_scores():
    rng = np.random.default_rng(3)
    scores, targets = rng.random((6, 5, 8, 8)), rng.integers(0, 5, (6, 8, 8))
    targets[0, 0] = 255
    evaluator = ParsingEvaluator(num_classes=5)
    for part in batches(6, 4):
        evaluator.process({"masks": torch.from_numpy(targets[part])}, torch.from_numpy(scores[part]))
    assert evaluator.evaluate() == parsing_metrics(scores.argmax(1), targets, num_classes=5)


def test_person_search_evaluator_takes_frames_and_queries_in_any_order():
    from personvl.evaluation import SearchQuery

    queries = [SearchQuery("s0", 1), SearchQuery("s1", 2)]
    query_features = np.array([[1.0, 0.0], unit(0.6)])
    evaluator = PersonSearchEvaluator(queries, SCENES)
    evaluator.process({"queries": [1]}, torch.tensor(query_features[1:]))
    names = list(DETECTIONS)
    evaluator.process({"scenes": names[:2]}, {key: [getattr(DETECTIONS[n], key) for n in names[:2]]
                                             for key in ("boxes", "scores", "features")})
    with pytest.raises(UsageError, match="1 queries have no features yet"):
        evaluator.evaluate()
    evaluator.process({"queries": [0]}, {"features": torch.tensor(query_features[:1])})
    evaluator.process({"scenes": names[2:]}, {key: [getattr(DETECTIONS[n], key) for n in names[2:]]
                                             for key in ("boxes", "scores", "features")})
    assert evaluator.evaluate() == person_search_metrics(query_features, queries, SCENES, DETECTIONS)


def test_growing_buffer_keeps_rows_in_order_across_growth():
    buffer = GrowingBuffer()
    rows = [torch.full((n, 2), float(i)) for i, n in enumerate([3, 70, 1, 200])]
    for block in rows:
        buffer.append(block)
    assert torch.equal(buffer.values(), torch.cat(rows)) and len(buffer) == 274
    with pytest.raises(UsageError, match="a batch has items of shape \\(3,\\)"):
        buffer.append(torch.ones(1, 3))


def test_detections_of_a_frame_can_be_given_as_tensors():
    detections = {name: SceneDetections(*(torch.as_tensor(np.asarray(getattr(d, key), dtype=np.float32))
                                          for key in ("boxes", "scores", "features")))
                  for name, d in DETECTIONS.items()}
    from personvl.evaluation import SearchQuery

    assert person_search_metrics([[1.0, 0.0]], [SearchQuery("s0", 1)], SCENES, detections)["top1"] == 0.0
