"""Evaluation with the field's protocols: text-to-image retrieval, image re-ID (with k-reciprocal
re-ranking), attribute recognition, human parsing and person search; streaming evaluators,
reports and plots.

Names are imported on first use, so ``import personvl`` does not load torch or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "retrieval_metrics": "retrieval",
    "reid_metrics": "retrieval",
    "ranked_gallery": "retrieval",
    "RerankSettings": "retrieval",
    "ranking_metrics": "ranking",
    "NoMatchWarning": "ranking",
    "k_reciprocal_distances": "rerank",
    "KReciprocalReranker": "rerank",
    "attribute_metrics": "attributes",
    "AttributeCounts": "attributes",
    "AttributeWarning": "attributes",
    "parsing_metrics": "parsing",
    "ConfusionMatrix": "parsing",
    "person_search_metrics": "person_search",
    "detection_metrics": "person_search",
    "Scene": "person_search",
    "SearchQuery": "person_search",
    "SceneDetections": "person_search",
    "Evaluator": "evaluators",
    "RetrievalEvaluator": "evaluators",
    "ReidEvaluator": "evaluators",
    "AttributeEvaluator": "evaluators",
    "ParsingEvaluator": "evaluators",
    "PersonSearchEvaluator": "evaluators",
    "write_report": "reports",
    "load_report": "reports",
    "merge_reports": "reports",
    "plot_cmc": "plots",
    "plot_retrieval_grid": "plots",
    "plot_reid_grid": "plots",
    "plot_attribute_accuracy": "plots",
    "plot_parsing_overlays": "plots",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'personvl.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"personvl.evaluation.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
