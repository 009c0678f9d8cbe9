"""Word boundaries of WordPiece token ids, and the attribute phrases of a caption, for
whole-word and attribute-phrase masking."""

from __future__ import annotations

import re
from typing import Sequence

import torch

# Word indices masked together: one attribute phrase of a caption.
Span = tuple[int, ...]

# Roles of the captioning vocabulary whose phrases name something a person wears or carries,
# or their hair: the attributes IAP predicts (age, gender and actions are not).
ATTRIBUTE_ROLES = ("hair", "worn", "carried")
# Words of the vocabulary's caption phrases that are neither the item nor a property of it.
_FUNCTION_WORDS = frozenset({"a", "an", "the", "of", "pair"})
# Words that end a noun phrase: a record's phrase is not matched across them.
_BREAK_WORDS = frozenset({"and", "or", "with", "in", "on", "of", "to", "is", "has", "but", "while", "a", "an", "the"})
# IAP's "words" units: colour and clothing-part words, each masked on its own.
COLOUR_WORDS = frozenset(
    "black white grey gray red blue green yellow orange pink purple brown beige navy dark light".split())
PART_WORDS = frozenset((
    "hair shirt t-shirt tee top jacket coat overcoat sweater jumper pullover dress skirt shorts trousers "
    "pants jeans slacks shoes sneakers trainers boots footwear backpack rucksack bag handbag purse "
    "hat cap beanie glasses sunglasses spectacles umbrella parasol phone cellphone sleeve sleeves "
    "socks scarf belt").split())
# At most this many other words may stand inside a record's phrase in a caption
# ("black shirt" in "a black short-sleeved striped shirt").
MAX_PHRASE_GAP = 2


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


def colour_and_part_words(words: Sequence[str]) -> list[int]:
    """Indices of the words that name a colour or a clothing part (``COLOUR_WORDS``,
    ``PART_WORDS``): IAP's units with ``plip.iap_units: words``."""
    return [i for i, word in enumerate(words) if word in COLOUR_WORDS or word in PART_WORDS]


def split_words(text: str) -> list[str]:
    """Lower-cased words as BERT's basic tokenizer splits them: every punctuation mark (a
    hyphen too) is a word of its own."""
    return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())


def _terms(words: Sequence[str]) -> list[tuple[str, Span]]:
    """Words with hyphenated compounds re-joined ("t", "-", "shirt" -> "t-shirt"), each with the
    indices of the words it spans."""
    terms: list[tuple[str, Span]] = []
    i = 0
    while i < len(words):
        text, span = words[i].lower(), [i]
        while i + 2 < len(words) and words[i + 1] == "-" and words[i + 2] != "-" and text[-1:].isalnum():
            text += "-" + words[i + 2].lower()
            span += [i + 1, i + 2]
            i += 2
        terms.append((text, tuple(span)))
        i += 1
    return terms


def _phrase_terms(text: str) -> tuple[str, ...]:
    return tuple(term for term, _ in _terms(split_words(text)))


def _is_word(term: str) -> bool:
    return term[:1].isalnum()


class AttributeMatcher:
    """Finds the attribute phrases of a caption: the spans of words IAP masks together.

    With the record's ``attribute_phrases`` ("black backpack", "long sleeves"), a span is
    every place the caption says one of them, in its own words or in a synonym the captioning
    vocabulary lists for it ("black tee" for "black t-shirt"); up to ``MAX_PHRASE_GAP`` other
    words may stand inside ("black short-sleeved shirt"), but no punctuation, conjunction or
    other item. A caption that says none of its record's phrases, or a record without phrases,
    falls back to the vocabulary: each run of property words (colours, lengths, materials, ...,
    and any hyphenated compound such as "one-piece") ending in the item they describe ("long
    black hair", "red shoulder bag"), and each run of property words that describes no item
    ("his shoes are black"). Words the vocabulary does not know are not masked: a vocabulary of
    one's own (``from_vocabulary(load_vocabulary(path))``) widens the matcher.

    Built once from a vocabulary (``from_vocabulary``); the spans of a caption are cached, so
    a caption seen again costs a lookup.
    """

    def __init__(self, items: Sequence[str], properties: Sequence[str],
                 synonyms: Sequence[Sequence[str]] = (), cache_size: int = 1 << 16):
        self.items = frozenset(items)
        self.properties = frozenset(properties) - self.items
        self._synonyms: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
        for group in synonyms:
            forms = {_phrase_terms(s) for s in group}
            for form in forms:
                self._synonyms.setdefault(form, set()).update(forms)
        self._cache: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[Span, ...]] = {}
        self._cache_size = cache_size

    @classmethod
    def from_vocabulary(cls, vocabulary=None) -> "AttributeMatcher":
        """The matcher of a captioning vocabulary (default: personvl's): the last word of each
        caption wording of a hair, worn or carried phrase is an item, its other words are
        properties, and the wordings of one phrase are synonyms."""
        from personvl.captioning.vocabulary import load_vocabulary, strip_article

        vocabulary = vocabulary if vocabulary is not None else load_vocabulary()
        items: set[str] = set()
        properties: set[str] = set()
        synonyms = []
        for phrase in vocabulary.phrases(extra=True):
            if phrase.absent or phrase.role not in ATTRIBUTE_ROLES:
                continue
            wordings = [strip_article(c.lower()) for c in phrase.captions]
            synonyms.append(wordings + [phrase.key.lower()])
            for wording in wordings:
                terms = [t for t in _phrase_terms(wording) if _is_word(t)]
                if terms:
                    items.add(terms[-1])
                    properties.update(t for t in terms[:-1] if t not in _FUNCTION_WORDS)
        return cls(sorted(items), sorted(properties), synonyms)

    def _is_property(self, term: str) -> bool:
        # A hyphenated compound that is not an item describes one ("one-piece", "short-sleeved").
        return term in self.properties or "-" in term

    def spans(self, words: Sequence[str], phrases: Sequence[str] = ()) -> tuple[Span, ...]:
        """The spans (word indices into ``words``) of the caption's attribute phrases, in
        caption order, disjoint."""
        key = (tuple(words), tuple(phrases))
        spans = self._cache.get(key)
        if spans is None:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            spans = self._cache[key] = self._spans(*key)
        return spans

    def _spans(self, words: tuple[str, ...], phrases: tuple[str, ...]) -> tuple[Span, ...]:
        terms = _terms(words)
        found: list[Span] = []
        for phrase in phrases:
            target = _phrase_terms(phrase)
            for form in self._synonyms.get(target, {target}) | {target}:
                found += self._occurrences(terms, form)
        return _disjoint(found) if found else self._vocabulary_spans(terms)

    def _occurrences(self, terms: list[tuple[str, Span]], form: tuple[str, ...]) -> list[Span]:
        """Where the caption says ``form``: its terms in order, at most ``MAX_PHRASE_GAP``
        other words inside, none of them an item, a punctuation mark or a break word."""
        if not form:
            return []
        spans = []
        for start, (term, _) in enumerate(terms):
            if term != form[0]:
                continue
            position, gap, k = start, 0, 1
            while k < len(form) and position + 1 < len(terms):
                position += 1
                term = terms[position][0]
                if term == form[k]:
                    k += 1
                    continue
                gap += 1
                if gap > MAX_PHRASE_GAP or not _is_word(term) or term in self.items or term in _BREAK_WORDS:
                    break
            if k == len(form):
                spans.append(tuple(i for _, span in terms[start:position + 1] for i in span))
        return spans

    def _vocabulary_spans(self, terms: list[tuple[str, Span]]) -> tuple[Span, ...]:
        spans: list[Span] = []
        run: list[int] = []
        for term, indices in terms:
            if term in self.items or self._is_property(term):
                run += indices
                if term in self.items:
                    spans.append(tuple(run))
                    run = []
            elif run:
                spans.append(tuple(run))
                run = []
        if run:
            spans.append(tuple(run))
        return tuple(spans)


def _disjoint(spans: list[Span]) -> tuple[Span, ...]:
    """Overlapping spans merged into one, in caption order."""
    merged: list[set[int]] = []
    for span in sorted(spans):
        if merged and min(span) <= max(merged[-1]):
            merged[-1].update(span)
        else:
            merged.append(set(span))
    return tuple(tuple(sorted(s)) for s in merged)
