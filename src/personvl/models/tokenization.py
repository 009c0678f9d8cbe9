"""Text tokenizers of the two tower families, behind one call: texts -> ids + attention mask.

BERT towers use WordPiece from a Hugging Face folder or hub name (or the small vocabulary shipped
with personvl for the tiny models); CLIP towers use open_clip's byte-pair tokenizer. A
tokenizer is saved with the model so a saved model embeds text on a machine without a network.
"""

from __future__ import annotations

import os
import shutil
import socket
from importlib import resources
from pathlib import Path
from typing import NamedTuple, Sequence
from urllib.parse import urlparse

import torch

from personvl.errors import PersonvlError

TINY_VOCAB_SOURCE = "personvl:tiny"
CLIP_BPE_SOURCE = "open_clip"
CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
BERT_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")


def tiny_vocab_path() -> Path:
    """The WordPiece vocabulary (lower-case letters, person-description words) of tiny models."""
    return Path(str(resources.files("personvl.models") / "data" / "tiny_vocab.txt"))


class TokenBatch(NamedTuple):
    input_ids: torch.Tensor        # [B, L] int64
    attention_mask: torch.Tensor   # [B, L] int64, 1 on real tokens


class BertTextTokenizer:
    """WordPiece, lower-cased, [CLS] ... [SEP], padded and truncated to ``max_length``."""

    kind = "bert"

    def __init__(self, tokenizer, max_length: int):
        self.hf = tokenizer
        self.max_length = max_length

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def mask_token_id(self) -> int:
        return int(self.hf.mask_token_id)

    @property
    def special_token_ids(self) -> list[int]:
        return sorted(int(i) for i in self.hf.all_special_ids)

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        encoded = self.hf(list(texts), padding="max_length", truncation=True, max_length=self.max_length,
                          return_tensors="pt")
        return TokenBatch(encoded["input_ids"], encoded["attention_mask"])

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        self.hf.save_pretrained(directory)
        # vocab.txt as well: the format every BERT tool (and the official PLIP code) reads.
        vocab = sorted(self.hf.get_vocab().items(), key=lambda item: item[1])
        (directory / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")


class ClipTextTokenizer:
    """open_clip's lower-cased byte-pair encoding: <start> ... <end>, zero-padded to
    ``max_length`` (77 for CLIP)."""

    kind = "clip"

    def __init__(self, bpe_path: str | os.PathLike | None, max_length: int):
        from open_clip.tokenizer import SimpleTokenizer, default_bpe

        self.bpe_path = Path(bpe_path) if bpe_path else Path(default_bpe())
        self.max_length = max_length
        self.simple = SimpleTokenizer(bpe_path=str(self.bpe_path), context_length=max_length)

    @property
    def vocab_size(self) -> int:
        return len(self.simple.encoder)

    @property
    def mask_token_id(self) -> int:
        """CLIP's vocabulary has no mask token: the last ordinary entry (a rare word, just
        below the start and end markers) stands in for it in masked-token objectives."""
        return self.vocab_size - 3

    @property
    def special_token_ids(self) -> list[int]:
        return sorted(int(i) for i in self.simple.all_special_ids)

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        ids = self.simple(list(texts), context_length=self.max_length)
        return TokenBatch(ids, (ids != 0).long())

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.bpe_path, directory / CLIP_BPE_FILE)


TextTokenizer = BertTextTokenizer | ClipTextTokenizer


def load_tokenizer(kind: str, source: str | os.PathLike, max_length: int) -> TextTokenizer:
    """The tokenizer of ``kind`` from ``source``: a local folder (a saved personvl tokenizer,
    a Hugging Face BERT folder), a ``vocab.txt`` file, a Hugging Face hub name, or one of the
    built-in vocabularies (``personvl:tiny``, ``open_clip``)."""
    if kind == "clip":
        return _load_clip(source, max_length)
    if kind == "bert":
        return BertTextTokenizer(_load_wordpiece(str(source)), max_length)
    raise PersonvlError(f"unknown tokenizer kind {kind!r} (known: bert, clip)")


def _load_clip(source: str | os.PathLike, max_length: int) -> ClipTextTokenizer:
    if str(source) == CLIP_BPE_SOURCE:
        return ClipTextTokenizer(None, max_length)
    path = Path(source).expanduser()
    bpe = path / CLIP_BPE_FILE if path.is_dir() else path
    if not bpe.is_file():
        raise PersonvlError(f"no CLIP vocabulary at {path} (expected {CLIP_BPE_FILE})")
    return ClipTextTokenizer(bpe, max_length)


def _load_wordpiece(source: str):
    from transformers import BertTokenizer

    if source == TINY_VOCAB_SOURCE:
        return _checked(_from_vocab_file(tiny_vocab_path()), source)
    path = Path(source).expanduser()
    if path.is_file():
        return _checked(_from_vocab_file(path), source)
    if path.is_dir():
        if not any((path / name).is_file() for name in BERT_TOKENIZER_FILES):
            raise PersonvlError(f"{path} has no tokenizer: expected vocab.txt or tokenizer.json in it")
        try:
            return _checked(BertTokenizer.from_pretrained(str(path)), source)
        except (OSError, ValueError) as exc:
            raise PersonvlError(f"cannot read the tokenizer in {path}: {exc}") from None
    if _looks_like_path(source):
        raise PersonvlError(f"tokenizer folder {source} does not exist")
    return _checked(_from_hub(source), source)


def _from_vocab_file(path: Path):
    from transformers import BertTokenizer

    try:
        # transformers 5 silently ignores ``vocab_file=`` (leaving only the 5 special tokens);
        # ``vocab=`` reads the file.
        return BertTokenizer(vocab=str(path), do_lower_case=True)
    except TypeError:   # transformers 4: the file is the required first argument
        return BertTokenizer(vocab_file=str(path), do_lower_case=True)


def _looks_like_path(source: str) -> bool:
    # Hub names are "name" or "owner/name"; anything else typed is meant as a local path.
    return source.startswith((".", "/", "~")) or source.endswith("/") or source.count("/") > 1 or "\\" in source


def _from_hub(name: str):
    from transformers import BertTokenizer

    try:
        cached = BertTokenizer.from_pretrained(name, local_files_only=True)
        # transformers 5 answers a name it has no files for with an empty 5-token tokenizer.
        if len(cached) > 5:
            return cached
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        raise PersonvlError(
            f"tokenizer '{name}' is not on this machine and the Hugging Face hub cannot be reached: "
            f"pass tokenizer='path/to/{name.split('/')[-1]}' (a local folder with its vocab.txt or tokenizer.json)")
    try:
        return BertTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise PersonvlError(f"cannot load tokenizer '{name}' from the Hugging Face hub: {exc}") from None


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers, asked once and quickly: the hub client itself
    retries for minutes before giving up on a machine without a network."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _checked(tokenizer, source: str):
    # A vocabulary of only the special tokens means the file was not read at all.
    if len(tokenizer) <= 5:
        raise PersonvlError(f"tokenizer from {source} has only {len(tokenizer)} tokens: its vocabulary was not read")
    return tokenizer
