"""The model zoo: PLIP, CLIP, CLIP re-ID, UniPT and VAL-PAT encoders, each with a ``tiny-``
variant that runs the same code with few layers and small widths (tests, CPU quickstarts).

Each function returns the full configuration; its keyword-only arguments are the overrides
``create_model`` accepts. Choices no paper fixes are marked *unpublished* and are options.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Sequence

from personvl.models.config import (
    CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, PLIP_MEAN, PLIP_STD, ModelConfig, PreprocessConfig,
    TokenizerConfig,
)
from personvl.models.registry import register_model
from personvl.models.text import BERT_BASE
from personvl.models.tokenization import CLIP_BPE_SOURCE, TINY_VOCAB_SOURCE, tiny_vocab_path

CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)
CLIP_CONTEXT = dict(context_length=77, vocab_size=49408)


def _tiny_bert() -> dict[str, Any]:
    vocab = len(tiny_vocab_path().read_text(encoding="utf-8").splitlines())
    return dict(BERT_BASE, vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=128)


def _bert_of_width(bert: dict[str, Any], hidden_size: int) -> dict[str, Any]:
    """``bert`` with another hidden size; the feed-forward width keeps its ratio."""
    heads = bert["num_attention_heads"]
    if hidden_size < heads or hidden_size % heads:
        raise ValueError(f"text_width must be a positive multiple of the {heads} attention heads, got {hidden_size}")
    ratio = bert["intermediate_size"] // bert["hidden_size"]
    return dict(bert, hidden_size=hidden_size, intermediate_size=ratio * hidden_size)


def _size(image_size: Sequence[int] | int | None, default: tuple[int, int]) -> tuple[int, int]:
    if image_size is None:
        return default
    if isinstance(image_size, int):
        return (image_size, image_size)
    size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"image_size must be (height, width), got {image_size!r}")
    return size


def _bert_tokenizer(tiny: bool, max_length: int) -> TokenizerConfig:
    return TokenizerConfig("bert", TINY_VOCAB_SOURCE if tiny else "bert-base-uncased", max_length)


def _clip_tokenizer() -> TokenizerConfig:
    return TokenizerConfig("clip", CLIP_BPE_SOURCE, CLIP_CONTEXT["context_length"])


def _clip_text(tiny: bool, output_dim: int, quick_gelu: bool) -> dict[str, Any]:
    widths = dict(width=64, heads=2, layers=2) if tiny else dict(width=512, heads=8, layers=12)
    return dict(type="clip_text", **CLIP_CONTEXT, **widths, output_dim=output_dim, quick_gelu=quick_gelu)


def _vit(tiny: bool, image_size, output_dim: int, patch_stride: int, pool: str, quick_gelu: bool) -> dict[str, Any]:
    if patch_stride not in range(1, 17):
        raise ValueError(f"patch_stride must be between 1 and the patch size 16, got {patch_stride}")
    widths = dict(width=64, layers=2, heads=2) if tiny else dict(width=768, layers=12, heads=12)
    return dict(type="vision_transformer", image_size=image_size, patch_size=16, patch_stride=patch_stride,
                **widths, output_dim=output_dim, pool=pool, quick_gelu=quick_gelu)


def _last_stride(last_stride: int) -> int:
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 (BoT's re-ID setting) or 2, got {last_stride}")
    return int(last_stride)


def plip_rn50(tiny: bool, *, image_size: Sequence[int] | None = None, frozen_text_layers: int | None = None,
              text_length: int = 64, text_pooling: str = "pooler", image_width: int | None = None,
              text_width: int | None = None, text_dropout: float | None = None, last_stride: int = 2) -> ModelConfig:
    """PLIP: CLIP's ModifiedResNet-50 with an 8-head attention pool to 768-d at 256x128, and
    BERT-base whose pooler output is the text embedding (layers 0-7 frozen).

    ``image_width`` (the ResNet's base width) and ``text_width`` (BERT's hidden size) size a
    model trained from scratch; ``text_pooling`` is ``pooler``, ``cls`` or ``max``. A randomly
    initialised small BERT learns far sooner with ``max`` pooling and no frozen layers: its
    [CLS] pooler gives nearly the same embedding to every caption for hundreds of steps.
    ``text_dropout`` replaces BERT's dropout probability (0.1) on hidden states and attention:
    a small model trained from scratch for minutes underfits, and dropout slows it further.
    ``last_stride=1`` (BoT) keeps the last ResNet stage at stride 16, here and in the other
    ResNet families: same weights, a 16x8 final grid at 256x128."""
    size = _size(image_size, (128, 64) if tiny else (256, 128))
    bert = _tiny_bert() if tiny else BERT_BASE
    if text_width is not None:
        bert = _bert_of_width(bert, text_width)
    if text_dropout is not None:
        if not 0.0 <= text_dropout < 1.0:
            raise ValueError(f"text_dropout must be in [0, 1), got {text_dropout}")
        bert = dict(bert, hidden_dropout_prob=float(text_dropout), attention_probs_dropout_prob=float(text_dropout))
    width = bert["hidden_size"]
    base_width = image_width if image_width is not None else (8 if tiny else 64)
    if base_width < 2 or base_width % 2:
        raise ValueError(f"image_width must be an even number of at least 2, got {base_width}")
    image = dict(type="modified_resnet", layers=(1, 1, 1, 1) if tiny else (3, 4, 6, 3), width=base_width,
                 heads=2 if tiny else 8, output_dim=width, image_size=size, last_stride=_last_stride(last_stride))
    frozen = (1 if tiny else 8) if frozen_text_layers is None else frozen_text_layers
    text = dict(type="bert", bert=bert, pooling=text_pooling, output_dim=None, frozen_layers=frozen)
    return ModelConfig("", width, image, text, PreprocessConfig(size, PLIP_MEAN, PLIP_STD),
                       _bert_tokenizer(tiny, text_length))


def plip_swinb(tiny: bool, *, image_size: Sequence[int] | None = None, frozen_text_layers: int | None = None,
               text_length: int = 64) -> ModelConfig:
    """PLIP's large row: timm's Swin-B (window 7) at 256x128 with a linear projection of its
    pooled features to the 768-d BERT pooler space."""
    size = _size(image_size, (128, 64) if tiny else (256, 128))
    bert = _tiny_bert() if tiny else BERT_BASE
    width = bert["hidden_size"]
    swin = dict(img_size=size)
    if tiny:
        swin.update(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))
    image = dict(type="timm", model_name="swin_base_patch4_window7_224", image_size=size, output_dim=width,
                 projection="linear", model_kwargs=swin)
    frozen = (1 if tiny else 8) if frozen_text_layers is None else frozen_text_layers
    text = dict(type="bert", bert=bert, pooling="pooler", output_dim=None, frozen_layers=frozen)
    return ModelConfig("", width, image, text, PreprocessConfig(size, PLIP_MEAN, PLIP_STD),
                       _bert_tokenizer(tiny, text_length))


def clip_rn50(tiny: bool, *, image_size: Sequence[int] | int | None = None, quick_gelu: bool = False,
              last_stride: int = 2) -> ModelConfig:
    """CLIP RN50 exactly as open_clip builds ``RN50`` (``RN50-quickgelu`` with quick_gelu=True)."""
    size = _size(image_size, (64, 64) if tiny else (224, 224))
    dim = 64 if tiny else 1024
    width = 8 if tiny else 64
    image = dict(type="modified_resnet", layers=(1, 1, 1, 1) if tiny else (3, 4, 6, 3), width=width,
                 heads=width * 32 // 64, output_dim=dim, image_size=size, last_stride=_last_stride(last_stride))
    return ModelConfig("", dim, image, _clip_text(tiny, dim, quick_gelu), PreprocessConfig(size, CLIP_MEAN, CLIP_STD),
                       _clip_tokenizer(), init_logit_scale=CLIP_INIT_LOGIT_SCALE)


def clip_vitb16(tiny: bool, *, image_size: Sequence[int] | int | None = None, quick_gelu: bool = False) -> ModelConfig:
    """CLIP ViT-B/16 exactly as open_clip builds ``ViT-B-16`` (``-quickgelu`` with quick_gelu=True)."""
    size = _size(image_size, (64, 64) if tiny else (224, 224))
    dim = 64 if tiny else 512
    image = _vit(tiny, size, dim, 16, "token", quick_gelu)
    return ModelConfig("", dim, image, _clip_text(tiny, dim, quick_gelu), PreprocessConfig(size, CLIP_MEAN, CLIP_STD),
                       _clip_tokenizer(), init_logit_scale=CLIP_INIT_LOGIT_SCALE)


def clip_vitb16_reid(tiny: bool, *, image_size: Sequence[int] | None = None, patch_stride: int = 16,
                     quick_gelu: bool = False) -> ModelConfig:
    """CLIP ViT-B/16 at 384x128 (IRRA, CLIP-ReID): a 24x8 patch grid, or 31x10 with
    overlapping stride-12 patches; CLIP's 14x14 position embeddings are interpolated at load."""
    size = _size(image_size, (128, 64) if tiny else (384, 128))
    dim = 64 if tiny else 512
    image = _vit(tiny, size, dim, patch_stride, "token", quick_gelu)
    return ModelConfig("", dim, image, _clip_text(tiny, dim, quick_gelu), PreprocessConfig(size, CLIP_MEAN, CLIP_STD),
                       _clip_tokenizer(), init_logit_scale=CLIP_INIT_LOGIT_SCALE)


def unipt_vitb16(tiny: bool, *, image_size: Sequence[int] | None = None, patch_stride: int = 16,
                 embed_dim: int | None = None, text_length: int = 100, quick_gelu: bool = False) -> ModelConfig:
    """UniPT: ViT-B/16 at 384x128 and BERT-base, each max-pooling its tokens and projecting
    linearly into the joint space (512-d, *unpublished*); text up to 100 tokens."""
    size = _size(image_size, (128, 64) if tiny else (384, 128))
    dim = embed_dim or (32 if tiny else 512)
    image = _vit(tiny, size, dim, patch_stride, "max", quick_gelu)
    text = dict(type="bert", bert=_tiny_bert() if tiny else BERT_BASE, pooling="max", output_dim=dim, frozen_layers=0)
    return ModelConfig("", dim, image, text, PreprocessConfig(size, CLIP_MEAN, CLIP_STD),
                       _bert_tokenizer(tiny, text_length), init_logit_scale=CLIP_INIT_LOGIT_SCALE)


def valpat_rn50(tiny: bool, *, image_size: Sequence[int] | None = None, embed_dim: int | None = None,
                text_length: int = 64, last_stride: int = 2) -> ModelConfig:
    """VAL-PAT: timm's ResNet-50 with an MLP projection head, BERT-base's [CLS] state projected
    linearly (head shapes and the 512-d space are *unpublished*); ImageNet normalisation."""
    size = _size(image_size, (128, 64) if tiny else (256, 128))
    dim = embed_dim or (32 if tiny else 512)
    trunk = dict(layers=(1, 1, 1, 1), channels=(8, 16, 32, 64)) if tiny else {}
    image = dict(type="timm", model_name="resnet50", image_size=size, output_dim=dim, projection="mlp",
                 model_kwargs=trunk, last_stride=_last_stride(last_stride))
    text = dict(type="bert", bert=_tiny_bert() if tiny else BERT_BASE, pooling="cls", output_dim=dim, frozen_layers=0)
    return ModelConfig("", dim, image, text, PreprocessConfig(size, IMAGENET_MEAN, IMAGENET_STD),
                       _bert_tokenizer(tiny, text_length), init_logit_scale=CLIP_INIT_LOGIT_SCALE)


PERSONVL_DIR = "personvl model folder (save_model)"
BERT_DIR = "Hugging Face BERT folder or hub name, e.g. bert-base-uncased (text tower)"
CLIP_VIT_FILES = "CLIP ViT-B/16: OpenAI TorchScript ViT-B-16.pt or open_clip state dict"
FAMILIES = {
    "plip-rn50": (plip_rn50, (PERSONVL_DIR, "official PLIP checkpoint (PLIP_RN50.pth.tar)",
                              "CLIP RN50 file or 'openai' (image tower trunk; the attention pool differs)", BERT_DIR)),
    "plip-swinb": (plip_swinb, (PERSONVL_DIR, "timm Swin-B state dict (image tower)", BERT_DIR)),
    "clip-rn50": (clip_rn50, (PERSONVL_DIR, "CLIP RN50: OpenAI TorchScript RN50.pt or open_clip state dict")),
    "clip-vitb16": (clip_vitb16, (PERSONVL_DIR, CLIP_VIT_FILES)),
    "clip-vitb16-reid": (clip_vitb16_reid, (PERSONVL_DIR, CLIP_VIT_FILES)),
    "unipt-vitb16": (unipt_vitb16, (PERSONVL_DIR, CLIP_VIT_FILES + " or 'openai' (image tower)", BERT_DIR)),
    "valpat-rn50": (valpat_rn50, (PERSONVL_DIR, "timm ResNet-50 state dict or timm name, e.g. resnet50.tv_in1k "
                                                "(image tower)", BERT_DIR)),
}

# Options of other families asked of one that cannot have them, with what to use instead.
_VIT_GRID = ("a ViT has no strided last stage; its feature grid is set by patch_stride, the ViT equivalent "
             "(clip-vitb16-reid and unipt-vitb16 take e.g. patch_stride=12 for overlapping patches)")
REFUSED_OPTIONS = {
    "clip-vitb16": {"last_stride": _VIT_GRID},
    "clip-vitb16-reid": {"last_stride": _VIT_GRID},
    "unipt-vitb16": {"last_stride": _VIT_GRID},
    "plip-swinb": {"last_stride": "last_stride is for the ResNet towers; Swin-B merges patches between stages"},
}

for _name, (_build, _weights) in FAMILIES.items():
    _doc = (_build.__doc__ or "").split("\n\n")[0]
    _description = " ".join(_doc.split()).replace("``", "")
    _refused = REFUSED_OPTIONS.get(_name, {})
    register_model(_name, partial(_build, False), _description, _weights, _refused)
    register_model(f"tiny-{_name}", partial(_build, True), f"{_name} with few layers and small widths", _weights,
                   _refused)
