"""Conquer: score every phrase of the vocabulary against a batch of images at once.

The prompts are embedded once; each image batch costs one image-encoder pass and one
[B, D] x [D, P] product, followed by a softmax inside each group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from personvl.captioning.vocabulary import Group, Phrase, Vocabulary
from personvl.errors import UsageError

DEFAULT_THRESHOLD = 0.9
# CLIP's learned temperature ends near 100; models trained without one (PLIP) get the same.
DEFAULT_LOGIT_SCALE = 100.0


@dataclass
class Choice:
    """What one group says about one image: the phrase (None when an optional group stays
    silent), its softmax probability, and the best phrase whether kept or not."""

    group: str
    phrase: Phrase | None
    probability: float
    best: Phrase


class AttributeScorer:
    """Group-wise phrase probabilities of images under one model.

    ``logit_scale`` multiplies the cosine similarities before the softmax (default: the
    model's learned temperature where it has one, else 100). ``extra=True`` also scores the
    vocabulary's extra groups (SYNTH-PEDES's shoes slot).
    """

    def __init__(self, model, vocabulary: Vocabulary, *, threshold: float = DEFAULT_THRESHOLD,
                 logit_scale: float | None = None, extra: bool = False, text_batch_size: int = 256):
        if not 0.0 <= threshold <= 1.0:
            raise UsageError(f"threshold must be a probability in [0, 1], got {threshold}")
        self.model = model
        self.vocabulary = vocabulary
        self.threshold = threshold
        self.groups: tuple[Group, ...] = vocabulary.all_groups(extra)
        self.phrases: list[Phrase] = [p for g in self.groups for p in g.phrases]
        self.spans: list[tuple[int, int]] = []
        start = 0
        for group in self.groups:
            self.spans.append((start, start + len(group.phrases)))
            start += len(group.phrases)
        if logit_scale is None:
            learned = getattr(model, "logit_scale", None)
            logit_scale = float(learned.detach().exp()) if learned is not None else DEFAULT_LOGIT_SCALE
        self.logit_scale = float(logit_scale)
        self.text_embeddings = self._embed_prompts(vocabulary.prompts(extra), text_batch_size)
        attribute_names = vocabulary.attribute_names()
        self.attribute_names = attribute_names
        index = {name: i for i, name in enumerate(attribute_names)}
        # [P, A] 0/1: which attributes each phrase switches on; an attribute's score is its
        # group's probability mass on the phrases carrying it. Extra groups carry none.
        membership = np.zeros((len(self.phrases), len(attribute_names)), np.float32)
        for row, phrase in enumerate(self.phrases):
            if not phrase.absent:
                for name in phrase.attributes:
                    if name in index:
                        membership[row, index[name]] = 1.0
        self.membership = membership

    @torch.inference_mode()
    def _embed_prompts(self, prompts: list[str], batch_size: int) -> torch.Tensor:
        chunks = [self.model.encode_text(prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)]
        return torch.cat(chunks).float()

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        """[B, P] probabilities: a softmax over each group's phrases (columns in ``phrases``
        order), from one matrix product for the whole batch."""
        features = self.model.encode_image(images).float()
        logits = self.logit_scale * features @ self.text_embeddings.T
        probabilities = torch.empty_like(logits)
        for start, stop in self.spans:
            probabilities[:, start:stop] = logits[:, start:stop].softmax(dim=-1)
        return probabilities.cpu().numpy()

    def choose(self, probabilities: np.ndarray) -> list[list[Choice]]:
        """Per image, one ``Choice`` per group: the top phrase of a required group; the top
        phrase of an optional group when it is not the absent phrase and its probability
        exceeds the threshold."""
        chosen = []
        for row in probabilities:
            choices = []
            for group, (start, stop) in zip(self.groups, self.spans):
                local = int(np.argmax(row[start:stop]))
                best = group.phrases[local]
                probability = float(row[start + local])
                keep = group.required or (not best.absent and probability > self.threshold)
                choices.append(Choice(group.name, best if keep else None, probability, best))
            chosen.append(choices)
        return chosen

    def attribute_scores(self, probabilities: np.ndarray) -> np.ndarray:
        """[B, A] score per attribute name: the probability of its group naming it."""
        return probabilities @ self.membership

    def attribute_vector(self, choices: list[Choice]) -> list[int]:
        """0/1 over ``attribute_names``: the attributes of the chosen phrases."""
        on = {name for c in choices if c.phrase is not None and not c.phrase.absent for name in c.phrase.attributes}
        return [int(name in on) for name in self.attribute_names]
