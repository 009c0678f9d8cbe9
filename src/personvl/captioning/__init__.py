"""Pseudo captions and attributes for unlabeled person images.

Divide-conquer-combine (UniPT): a vision-language model scores the phrases of an attribute
vocabulary (14 groups, ``data/vocabulary.yaml``) with the prompt "A photo of a person
<phrase>"; required groups keep their best phrase, optional groups only a confident one; the
phrases fill sentence templates from a grammar (``data/templates.yaml``). The same scores give
binary attribute vectors (``attributes``) and SYNTH-PEDES-style prompt captions
(``synth-pedes``).

>>> from personvl.captioning import load_vocabulary
>>> len(load_vocabulary().groups)
14
"""

from personvl.captioning.compose import (
    SYNTH_PEDES_SLOTS, Caption, synth_pedes_attributes, synth_pedes_caption, write_caption, write_captions)
from personvl.captioning.evaluation import (
    AttributeEvaluation, DiversityReport, SlotAccuracy, caption_diversity, compare_diversity, diversity_table,
    evaluate_captions, find_world, read_caption_records)
from personvl.captioning.grammar import expand, fill, load_templates
from personvl.captioning.pipeline import METHODS, CaptionRun, caption_images, failures_path_of, list_image_paths
from personvl.captioning.scoring import DEFAULT_THRESHOLD, AttributeScorer, Choice
from personvl.captioning.vocabulary import Group, Phrase, Vocabulary, load_vocabulary
from personvl.captioning.writer import ResumableJsonl

__all__ = [
    "AttributeEvaluation", "AttributeScorer", "Caption", "CaptionRun", "Choice", "DEFAULT_THRESHOLD",
    "DiversityReport", "Group", "METHODS", "Phrase", "ResumableJsonl", "SYNTH_PEDES_SLOTS", "SlotAccuracy",
    "Vocabulary", "caption_diversity", "caption_images", "compare_diversity", "diversity_table",
    "evaluate_captions", "expand", "failures_path_of", "fill", "find_world", "list_image_paths", "load_templates",
    "load_vocabulary", "read_caption_records", "synth_pedes_attributes", "synth_pedes_caption", "write_caption",
    "write_captions",
]
