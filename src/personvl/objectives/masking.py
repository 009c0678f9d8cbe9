"""Masked-token objectives: whole-word MLM (UniPT), attribute-phrase masking (PLIP's IAP) and
BERT-style random token masking (IRRA's implicit relation reasoning)."""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

COLOUR_WORDS = frozenset(
    "black white grey gray red blue green yellow orange pink purple brown beige navy dark light".split())
PART_WORDS = frozenset((
    "hair shirt t-shirt tee top jacket coat overcoat sweater jumper pullover dress skirt shorts trousers "
    "pants jeans slacks shoes sneakers trainers boots footwear backpack rucksack bag handbag purse "
    "hat cap beanie glasses sunglasses spectacles umbrella parasol phone cellphone sleeve sleeves "
    "socks scarf belt").split())


def masking_ratio_schedule(progress: float, start: float = 0.2, end: float = 0.8) -> float:
    """PLIP's curriculum: the masking ratio rises from ``start`` to ``end`` as the square root of
    training progress (0..1), so it climbs fast early and settles late."""
    progress = min(1.0, max(0.0, float(progress)))
    return start + (end - start) * math.sqrt(progress)


def select_attribute_words(words: Sequence[str], phrases: Sequence[str] = ()) -> list[int]:
    """Indices of the words that carry attributes: the words of the record's attribute phrases
    when it has them, else colour and clothing-part words found by a matcher."""
    lowered = [re.sub(r"[^a-z\-]", "", w.lower()) for w in words]
    if phrases:
        wanted = {w for phrase in phrases for w in phrase.lower().split()}
        return [i for i, w in enumerate(lowered) if w in wanted]
    return [i for i, w in enumerate(lowered) if w in COLOUR_WORDS or w in PART_WORDS]


def whole_word_mask(
    input_ids: torch.Tensor,
    word_ids: Sequence[Sequence[int | None]],
    ratio: float,
    mask_token_id: int,
    generator: torch.Generator | None = None,
    candidate_words: Sequence[Sequence[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask whole words: every sub-token of a chosen word is replaced by ``mask_token_id``.

    ``word_ids[b][t]`` is the word index of token t (None for special and padding tokens, as a
    fast tokenizer's ``word_ids()`` gives). ``ratio`` of the words (at least one when any is
    eligible) are chosen, among ``candidate_words[b]`` when given (attribute masking), else
    among all words. Returns the masked ids and the labels (original ids at masked positions,
    ``IGNORE_INDEX`` elsewhere).
    """
    masked = input_ids.clone()
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for b, row_words in enumerate(word_ids):
        present = sorted({w for w in row_words if w is not None})
        eligible = [w for w in present if candidate_words is None or w in set(candidate_words[b])]
        if not eligible:
            continue
        count = max(1, int(round(ratio * len(eligible))))
        order = torch.randperm(len(eligible), generator=generator)[:count]
        chosen = {eligible[i] for i in order.tolist()}
        for t, w in enumerate(row_words):
            if w is not None and w in chosen:
                labels[b, t] = input_ids[b, t]
                masked[b, t] = mask_token_id
    return masked, labels


def random_token_mask(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    ratio: float,
    mask_token_id: int,
    replacement_ids: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's token masking: each ``maskable`` token ([B, T] bool, False on special and padding
    tokens) is chosen with probability ``ratio``; a chosen token becomes ``mask_token_id`` 80%
    of the time, one of ``replacement_ids`` (ordinary tokens, so that no special token such as
    CLIP's end-of-text, which pools the caption, appears mid-sentence) 10% of the time, and
    stays itself otherwise. Returns the new ids and the labels (the original ids where chosen,
    ``IGNORE_INDEX`` elsewhere)."""
    chosen = (torch.rand(input_ids.shape, generator=generator) < ratio) & maskable.bool()
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = torch.rand(input_ids.shape, generator=generator)
    masked = input_ids.clone()
    masked[chosen & (action < 0.8)] = mask_token_id
    replaced = chosen & (action >= 0.8) & (action < 0.9)
    picks = torch.randint(0, len(replacement_ids), input_ids.shape, generator=generator)
    masked[replaced] = replacement_ids.to(input_ids.dtype)[picks][replaced]
    return masked, labels


def masked_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the masked positions only ([B, T, V] logits, [B, T] labels)."""
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
