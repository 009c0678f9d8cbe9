"""Masked-token objectives: whole-word MLM (UniPT), attribute-phrase masking (PLIP's IAP) and
BERT-style random token masking (IRRA's implicit relation reasoning)."""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

# BERT's split of the chosen tokens: 80% become [MASK], 10% a random ordinary token, 10% stay.
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1

# A maskable unit: one word index, or the word indices of a phrase masked together.
Unit = Union[int, Sequence[int]]


def masking_ratio_schedule(progress: float, start: float = 0.2, end: float = 0.8) -> float:
    """PLIP's curriculum: the masking ratio rises from ``start`` to ``end`` as the square root of
    training progress (0..1), so it climbs fast early and settles late."""
    progress = min(1.0, max(0.0, float(progress)))
    return start + (end - start) * math.sqrt(progress)


def _corrupt(input_ids: torch.Tensor, chosen: torch.Tensor, action: torch.Tensor, mask_token_id: int,
             replacement_ids: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    """The chosen tokens after BERT's split: ``action`` < 0.8 -> ``mask_token_id``, 0.8..0.9 ->
    a random entry of ``replacement_ids``, otherwise unchanged. Without ``replacement_ids``
    every chosen token becomes ``mask_token_id``."""
    masked = input_ids.clone()
    if replacement_ids is None:
        masked[chosen] = mask_token_id
        return masked
    masked[chosen & (action < MASK_SHARE)] = mask_token_id
    replaced = chosen & (action >= MASK_SHARE) & (action < MASK_SHARE + RANDOM_SHARE)
    picks = torch.randint(0, len(replacement_ids), input_ids.shape, generator=generator)
    masked[replaced] = replacement_ids.to(input_ids.dtype)[picks][replaced]
    return masked


def whole_word_mask(
    input_ids: torch.Tensor,
    word_ids: Sequence[Sequence[int | None]],
    ratio: float,
    mask_token_id: int,
    generator: torch.Generator | None = None,
    candidate_words: Sequence[Sequence[Unit]] | None = None,
    replacement_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask whole words: every sub-token of a chosen word is masked.

    ``word_ids[b][t]`` is the word index of token t (None for special and padding tokens, as a
    fast tokenizer's ``word_ids()`` gives). The units of row b are its words, or
    ``candidate_words[b]`` when given: word indices, or tuples of word indices that are chosen
    and masked together (an attribute phrase). ``ratio`` of the units (at least one when there
    is any) are chosen. Without ``replacement_ids`` every token of a chosen unit becomes
    ``mask_token_id``; with them (ordinary token ids), BERT's 80/10/10 split is drawn once per
    unit: all its tokens become ``mask_token_id``, or random replacement tokens, or stay as they
    are. Returns the masked ids and the labels (original ids at the chosen positions,
    ``IGNORE_INDEX`` elsewhere).
    """
    chosen = torch.zeros(input_ids.shape, dtype=torch.bool)
    action = torch.zeros(input_ids.shape)
    for b, row_words in enumerate(word_ids):
        positions: dict[int, list[int]] = {}
        for t, w in enumerate(row_words):
            if w is not None:
                positions.setdefault(w, []).append(t)
        if candidate_words is None:
            units: list[tuple[int, ...]] = [(w,) for w in sorted(positions)]
        else:
            units = [tuple(u) if isinstance(u, (tuple, list)) else (u,) for u in candidate_words[b]]
            units = [u for u in units if any(w in positions for w in u)]
        if not units:
            continue
        count = max(1, int(round(ratio * len(units))))
        order = torch.randperm(len(units), generator=generator)[:count].tolist()
        draws = torch.rand(count, generator=generator).tolist() if replacement_ids is not None else [0.0] * count
        for unit_index, draw in zip(order, draws):
            for w in units[unit_index]:
                for t in positions.get(w, ()):
                    chosen[b, t] = True
                    action[b, t] = draw
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return _corrupt(input_ids, chosen, action, mask_token_id, replacement_ids, generator), labels


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
    return _corrupt(input_ids, chosen, action, mask_token_id, replacement_ids, generator), labels


def masked_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the masked positions only ([B, T, V] logits, [B, T] labels)."""
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
