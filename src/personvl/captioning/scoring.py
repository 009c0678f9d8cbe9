"""Conquer: score every phrase of the vocabulary against a batch of images at once.

The prompts are embedded once; each image batch costs one image-encoder pass and one
[B, D] x [D, P] product, followed by a softmax inside each group. A phrase's text embedding
averages every prompt that says it: each prompt template filled with each of its wordings
("a grey jacket", "a gray windbreaker" ...), so that no single wording decides.

Two refinements serve the facts a caption states rather than the phrase as a whole:

- a required group keeps the phrase whose facts are most probable. A fact's probability is the
  group's mass on every phrase stating it ("red" summed over all red garments), and a phrase
  scores the mean over its facts. With one fact per phrase this is the most probable phrase.
- optional *calibration*: each required phrase's mean log-probability over a sample of the
  images being captioned is subtracted before the softmax. A contrastive model gives some
  prompts a higher similarity to every image ("who is a man", "wearing a red coat"); centring
  removes that bias, which the model learned from its text and not from the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from personvl.captioning.vocabulary import Group, Phrase, Vocabulary, check_prompt_templates
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
    vocabulary's extra groups (SYNTH-PEDES's shoes slot). ``prompts``: templates with a
    {phrase} field replacing the vocabulary's. A phrase's text embedding is the mean over every
    template filled with every wording of it (a prompt ensemble). ``calibrate(offsets)`` turns
    on calibration with offsets from ``estimate_offsets``.
    """

    def __init__(self, model, vocabulary: Vocabulary, *, threshold: float = DEFAULT_THRESHOLD,
                 logit_scale: float | None = None, extra: bool = False, prompts: Sequence[str] | None = None,
                 text_batch_size: int = 256):
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
        self.prompt_templates = vocabulary.prompt_templates if prompts is None else check_prompt_templates(prompts)
        self.text_embeddings = self._embed_ensembles(vocabulary.prompt_ensembles(extra, self.prompt_templates),
                                                     text_batch_size)
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
        self.fact_matrices = [_fact_matrix(group) for group in self.groups]
        self.offsets: np.ndarray | None = None

    @torch.inference_mode()
    def _embed_ensembles(self, ensembles: list[tuple[str, ...]], batch_size: int) -> torch.Tensor:
        """[P, D]: per phrase, the direction of its prompts' mean embedding at their mean
        length (a unit vector for every personvl model; a single prompt's embedding as it is)."""
        prompts = [prompt for ensemble in ensembles for prompt in ensemble]
        chunks = [self.model.encode_text(prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)]
        embeddings = torch.cat(chunks).float()
        sizes = torch.tensor([len(e) for e in ensembles], device=embeddings.device)
        owner = torch.repeat_interleave(torch.arange(len(ensembles), device=embeddings.device), sizes)
        sums = torch.zeros(len(ensembles), embeddings.shape[1], device=embeddings.device).index_add_(0, owner, embeddings)
        lengths = torch.zeros(len(ensembles), device=embeddings.device).index_add_(0, owner, embeddings.norm(dim=-1))
        return torch.nn.functional.normalize(sums, dim=-1) * (lengths / sizes)[:, None]

    @torch.inference_mode()
    def log_probabilities(self, images: torch.Tensor, calibrated: bool = True) -> torch.Tensor:
        """[B, P] log-probabilities: a log-softmax over each group's phrases (columns in
        ``phrases`` order), from one matrix product for the whole batch; calibrated when
        calibration is on and ``calibrated``."""
        features = self.model.encode_image(images).float()
        logits = self.logit_scale * features @ self.text_embeddings.T
        if calibrated and self.offsets is not None:
            logits = logits - torch.from_numpy(self.offsets).to(logits.device)
        log_probabilities = torch.empty_like(logits)
        for start, stop in self.spans:
            log_probabilities[:, start:stop] = logits[:, start:stop].log_softmax(dim=-1)
        return log_probabilities

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        """[B, P] probabilities: a softmax over each group's phrases, calibrated when
        calibration is on."""
        return self.log_probabilities(images).exp().cpu().numpy()

    def estimate_offsets(self, batches: Iterable[torch.Tensor]) -> np.ndarray:
        """[P] calibration offsets: each required group's phrase log-probabilities averaged
        over the images of ``batches`` (uncalibrated); 0 for optional groups, whose phrases
        must clear an absolute threshold."""
        total = torch.zeros(len(self.phrases), dtype=torch.float64)
        count = 0
        for images in batches:
            total += self.log_probabilities(images, calibrated=False).double().sum(dim=0).cpu()
            count += len(images)
        if count == 0:
            raise UsageError("calibration needs at least one readable image")
        offsets = (total / count).numpy().astype(np.float32)
        for group, (start, stop) in zip(self.groups, self.spans):
            if not group.required:
                offsets[start:stop] = 0.0
        return offsets

    def calibrate(self, offsets: np.ndarray | None) -> None:
        """Subtract ``offsets`` ([P], from ``estimate_offsets``) from the phrase log-
        probabilities from now on; None turns calibration off."""
        if offsets is not None:
            offsets = np.asarray(offsets, dtype=np.float32)
            if offsets.shape != (len(self.phrases),):
                raise UsageError(f"calibration offsets must have one value per phrase ({len(self.phrases)}), "
                                 f"got shape {offsets.shape}")
        self.offsets = offsets

    def choose(self, probabilities: np.ndarray) -> list[list[Choice]]:
        """Per image, one ``Choice`` per group. A required group takes the phrase whose facts
        are most probable (see the module text); an optional group takes its top phrase when
        that is not the absent phrase and its probability exceeds the threshold."""
        picks = []
        for group, (start, stop), facts in zip(self.groups, self.spans, self.fact_matrices):
            block = probabilities[:, start:stop]
            if group.required and facts is not None:
                # [B, F] mass of each fact, then each phrase's mean over its facts; the phrase's
                # own probability breaks ties.
                fact_mass = block @ facts
                score = (fact_mass @ facts.T) / facts.sum(axis=1) + 1e-6 * block
                picks.append(np.argmax(score, axis=1))
            else:
                picks.append(np.argmax(block, axis=1))
        chosen = []
        for row, probabilities_row in enumerate(probabilities):
            choices = []
            for group, (start, _), pick in zip(self.groups, self.spans, picks):
                local = int(pick[row])
                best = group.phrases[local]
                probability = float(probabilities_row[start + local])
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


def _fact_matrix(group: Group) -> np.ndarray | None:
    """[phrases, facts] 0/1: which (slot, value) facts each phrase of ``group`` states; None
    when some phrase states none (its choice then falls back to the phrase probabilities)."""
    facts = list(dict.fromkeys((slot, value) for phrase in group.phrases for slot, value in phrase.values.items()))
    if not facts or any(not phrase.values for phrase in group.phrases):
        return None
    column = {fact: i for i, fact in enumerate(facts)}
    matrix = np.zeros((len(group.phrases), len(facts)), np.float32)
    for row, phrase in enumerate(group.phrases):
        for fact in phrase.values.items():
            matrix[row, column[fact]] = 1.0
    return matrix
