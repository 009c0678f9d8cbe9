"""Word boundaries of WordPiece token ids, for whole-word and attribute-word masking."""

from __future__ import annotations

import torch

from personvl.objectives.masking import COLOUR_WORDS, PART_WORDS


def wordpiece_words(tokenizer, input_ids: torch.Tensor) -> tuple[list[list[int | None]], list[list[str]]]:
    """Per row: the word index of every token (None for special and padding tokens; a ``##``
    piece continues the previous word) and the words themselves, re-joined from their pieces."""
    special = set(tokenizer.all_special_ids)
    word_ids, words = [], []
    for row in input_ids.tolist():
        tokens = tokenizer.convert_ids_to_tokens(row)
        row_ids: list[int | None] = []
        row_words: list[str] = []
        for token_id, token in zip(row, tokens):
            if token_id in special:
                row_ids.append(None)
            elif token.startswith("##") and row_words:
                row_words[-1] += token[2:]
                row_ids.append(len(row_words) - 1)
            else:
                row_words.append(token)
                row_ids.append(len(row_words) - 1)
        word_ids.append(row_ids)
        words.append(row_words)
    return word_ids, words


def attribute_word_indices(words: list[str], phrases: list[str] | None = None) -> list[int]:
    """Words naming a colour or a clothing part (or, with ``phrases``, the phrases' words)."""
    wanted = {w for phrase in phrases for w in phrase.lower().split()} if phrases else COLOUR_WORDS | PART_WORDS
    return [i for i, word in enumerate(words) if word in wanted]
