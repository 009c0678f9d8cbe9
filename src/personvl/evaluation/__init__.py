"""Evaluation with the field's protocols."""

from personvl.evaluation.ranking import ranking_metrics

__all__ = ["ranking_metrics"]
