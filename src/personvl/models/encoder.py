"""``PersonEncoder``: an image tower and a text tower embedding into one space, with the
preprocessing and tokenizer that go with them."""

from __future__ import annotations

import os
from typing import NamedTuple, Sequence, Union

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from personvl.errors import PersonvlError
from personvl.models.config import ModelConfig
from personvl.models.image import build_image_tower
from personvl.models.text import build_text_tower
from personvl.models.tokenization import TextTokenizer, TokenBatch, load_tokenizer
from personvl.models.transforms import ImageTransform, open_rgb_image

ImageInput = Union[torch.Tensor, Image.Image, str, os.PathLike, Sequence[Union[Image.Image, str, os.PathLike]]]


class ImageFeatures(NamedTuple):
    maps: list[torch.Tensor]   # [B, C_i, H/s, W/s] for strides s = 4, 8, 16, 32 (visual.pyramid_strides)
    embedding: torch.Tensor    # [B, D], not normalised


class TextFeatures(NamedTuple):
    tokens: torch.Tensor          # [B, L, width] token states
    attention_mask: torch.Tensor  # [B, L], 1 on real tokens
    embedding: torch.Tensor       # [B, D], not normalised


class PersonEncoder(nn.Module):
    """``encode_image`` / ``encode_text`` give L2-normalised [B, D] embeddings;
    ``image_features`` / ``text_features`` give what heads and pre-training objectives need.

    ``visual`` and ``text`` are the towers, ``image_transform`` the evaluation preprocessing
    (a torchvision transform with ``size``, ``mean``, ``std``), ``tokenizer`` turns texts into
    ids (loaded on first use when the model was built without one), ``logit_scale`` the
    learnable temperature of the contrastive families (None for PLIP, whose loss has none).
    """

    def __init__(self, config: ModelConfig, tokenizer: TextTokenizer | None = None):
        super().__init__()
        self.config = config
        self.visual = build_image_tower(config.image_tower)
        self.text = build_text_tower(config.text_tower)
        dims = {"config": config.embed_dim, "image tower": self.visual.output_dim, "text tower": self.text.output_dim}
        if len(set(dims.values())) != 1:
            raise ValueError(f"embedding sizes disagree: {dims}")
        if config.init_logit_scale is not None:
            self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        else:
            self.logit_scale = None
        self.image_transform = ImageTransform.from_config(config.preprocess)
        self._tokenizer: TextTokenizer | None = None
        if tokenizer is not None:
            self.tokenizer = tokenizer
        self.load_report = None   # what the last weight loading did (personvl.models.checkpoints)

    @property
    def name(self) -> str:
        return self.config.architecture

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def tokenizer(self) -> TextTokenizer:
        if self._tokenizer is None:
            spec = self.config.tokenizer
            self.tokenizer = load_tokenizer(spec.kind, spec.source, spec.max_length)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: TextTokenizer) -> None:
        expected = "clip" if self.config.text_tower.get("type") == "clip_text" else "bert"
        if tokenizer.kind != expected:
            raise PersonvlError(f"{self.name} needs a {expected} tokenizer, got a {tokenizer.kind} one")
        if tokenizer.vocab_size > self.text.vocab_size:
            raise PersonvlError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the {self.name} text tower embeds only "
                f"{self.text.vocab_size}: it belongs to another model")
        if tokenizer.max_length > self.text.max_positions:
            raise PersonvlError(
                f"tokenizer pads to {tokenizer.max_length} tokens, more than the {self.text.max_positions} "
                f"positions of the {self.name} text tower")
        self._tokenizer = tokenizer

    @property
    def has_tokenizer(self) -> bool:
        """Whether a tokenizer is loaded (without loading the default one)."""
        return self._tokenizer is not None

    def tokenize(self, texts: str | Sequence[str]) -> TokenBatch:
        texts = [texts] if isinstance(texts, str) else list(texts)
        batch = self.tokenizer(texts)
        device = self.device
        return TokenBatch(batch.input_ids.to(device), batch.attention_mask.to(device))

    def preprocess(self, images: ImageInput) -> torch.Tensor:
        """A batch tensor on the model's device from a tensor ([3, H, W] or [B, 3, H, W], already
        normalised), or from PIL images or image paths (one or a sequence), transformed."""
        if isinstance(images, torch.Tensor):
            batch = images.unsqueeze(0) if images.dim() == 3 else images
        else:
            items = [images] if isinstance(images, (Image.Image, str, os.PathLike)) else list(images)
            batch = torch.stack([self.image_transform(open_rgb_image(item)) for item in items])
        return batch.to(self.device)

    def encode_image(self, images: ImageInput) -> torch.Tensor:
        """[B, D] L2-normalised image embeddings."""
        return F.normalize(self.visual(self.preprocess(images)), dim=-1)

    def encode_text(self, texts: str | Sequence[str]) -> torch.Tensor:
        """[B, D] L2-normalised text embeddings."""
        batch = self.tokenize(texts)
        return self.encode_tokens(batch.input_ids, batch.attention_mask)

    def encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, D] L2-normalised text embeddings from token ids (what ONNX export traces)."""
        return F.normalize(self.text(input_ids, attention_mask), dim=-1)

    def image_features(self, images: ImageInput) -> ImageFeatures:
        """The maps at strides 4, 8, 16, 32 (16 again for the last with ``last_stride=1``) and
        the global embedding (not normalised)."""
        maps, embedding = self.visual.forward_pyramid(self.preprocess(images))
        return ImageFeatures(list(maps), embedding)

    def text_features(self, texts: str | Sequence[str] | TokenBatch) -> TextFeatures:
        """Token states, their mask and the embedding (not normalised)."""
        batch = texts if isinstance(texts, TokenBatch) else self.tokenize(texts)
        tokens, embedding = self.text.forward_tokens(batch.input_ids, batch.attention_mask)
        return TextFeatures(tokens, batch.attention_mask, embedding)

    def extra_repr(self) -> str:
        return f"architecture={self.name!r}, embed_dim={self.embed_dim}"

