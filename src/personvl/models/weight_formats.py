"""Reading the weight files users have and naming their tensors the way personvl's models do.

Every reader returns a ``WeightSource``: tensors under personvl's names (``visual.*`` image
tower, ``text.*`` text tower, ``logit_scale``), the parts it covers, and what it found on the
way (a tokenizer folder, QuickGELU). Nothing here decides whether the weights fit a model;
``checkpoints.load_weights`` does, strictly.

Formats: a folder written by ``save_model``; a Hugging Face BERT folder; the official PLIP
checkpoint; OpenAI CLIP TorchScript archives; open_clip state dicts (also training checkpoints
holding one under ``state_dict``); a bare backbone state dict for the image tower (timm, or a
CLIP visual tower). Files are read with ``torch.load(weights_only=True)`` or safetensors, never
by running code.
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from personvl.errors import PersonvlError
from personvl.models.image import ModifiedResNetTower, TimmTower, VisionTransformerTower, resize_position_embedding
from personvl.models.text import BertTower
from personvl.models.text.bert import ARCHITECTURE_FIELDS
from personvl.models.tokenization import BERT_TOKENIZER_FILES
from personvl.models.torchscript import is_torchscript_archive, read_torchscript_weights

PARTS = ("image", "text", "logit_scale")
PART_PREFIXES = {"image": "visual.", "text": "text.", "logit_scale": "logit_scale"}
MODEL_CONFIG_FILE = "config.json"
MODEL_WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
HEADS_DIR = "heads"                 # fine-tuned task heads: heads/TASK.safetensors + heads/TASK.json
FORMAT_NAME = "personvl-model"

# Keys of the official PLIP text encoder that transformers >= 4.31 no longer has (a buffer it
# now recomputes); everything else in that file must load.
PLIP_STALE_TEXT_KEYS = ("encoder.embeddings.position_ids",)
# OpenAI's TorchScript CLIP files carry these settings as tensors beside the weights.
OPENAI_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
# open_clip's CLIP keeps its text tower at the top level; personvl's under ``text.``. (The causal
# ``attn_mask`` is a recomputed buffer that only TorchScript archives store.)
CLIP_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection",
                  "attn_mask")
# Classifier heads of ImageNet backbones, unused by an embedding model.
TIMM_CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.")


@dataclass
class WeightSource:
    path: Path
    kind: str
    state: dict[str, torch.Tensor]
    optional_prefixes: tuple[str, ...] = ()   # keys the model may lack (unused heads): ignored
    tokenizer_dir: Path | None = None
    quick_gelu: bool | None = None            # True: the file's model used QuickGELU
    config: dict | None = None                # a personvl folder's config.json
    unexpected: list[str] = field(default_factory=list)   # names the reader found no place for
    notes: list[str] = field(default_factory=list)
    covers: tuple[str, ...] | None = None     # model key prefixes it must fill; None: its parts
    # Model key prefixes it holds but deliberately does not fill (a part of another design),
    # with the reason: left as initialised and reported, never a silent partial load.
    leaves: dict[str, str] = field(default_factory=dict)

    @property
    def parts(self) -> set[str]:
        return {part_of(key) for key in self.state}

    @property
    def covered_prefixes(self) -> tuple[str, ...]:
        if self.covers is not None:
            return self.covers
        return tuple(sorted(PART_PREFIXES[part] for part in self.parts if part in PART_PREFIXES))


def part_of(key: str) -> str:
    if key.startswith("visual."):
        return "image"
    if key.startswith("text."):
        return "text"
    return "logit_scale" if key == "logit_scale" else "other"


def read_weights(path: str | Path, model: nn.Module) -> WeightSource:
    """Read ``path`` (file or folder) into a ``WeightSource`` named for ``model``, position
    embeddings interpolated to the model's grid."""
    source = _read_any(Path(path).expanduser(), model)
    _fit_position_embeddings(source, model)
    return source


def _read_any(path: Path, model: nn.Module) -> WeightSource:
    if path.is_dir():
        return _read_folder(path, model)
    if not path.is_file():
        raise PersonvlError(f"weights {path} do not exist")
    if path.suffix == ".safetensors":
        return _classify_state_dict(path, _load_safetensors(path), model)
    if is_torchscript_archive(path):
        return _read_openai_torchscript(path, model)
    checkpoint = _torch_load(path)
    if isinstance(checkpoint, dict) and "ImgEncoder_state_dict" in checkpoint:
        return _read_plip(path, checkpoint)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]   # open_clip / Lightning training checkpoints
    if not isinstance(checkpoint, dict) or not checkpoint or not all(
            isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise PersonvlError(f"{path} holds no state dict of tensors (found {type(checkpoint).__name__})")
    return _classify_state_dict(path, checkpoint, model)


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PersonvlError(f"cannot read {path} as a weights file without running code from it ({first_line})") from None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise PersonvlError(f"cannot read {path} as safetensors ({exc})") from None


def _read_folder(path: Path, model: nn.Module) -> WeightSource:
    config_file = path / MODEL_CONFIG_FILE
    if not config_file.is_file():
        raise PersonvlError(f"{path} is neither a personvl model folder nor a Hugging Face BERT folder (no config.json)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PersonvlError(f"cannot read {config_file}: {exc}") from None
    if config.get("format") == FORMAT_NAME:
        weights = path / MODEL_WEIGHTS_FILE
        if not weights.is_file():
            raise PersonvlError(f"model folder {path} has no {MODEL_WEIGHTS_FILE}")
        tokenizer = path / TOKENIZER_DIR
        return WeightSource(path, "personvl", _load_safetensors(weights), config=config,
                            tokenizer_dir=tokenizer if tokenizer.is_dir() else None)
    if config.get("model_type") == "bert":
        return _read_bert_folder(path, config, model)
    raise PersonvlError(f"{path} is neither a personvl model folder nor a Hugging Face BERT folder "
                        f"(config.json has model_type {config.get('model_type')!r})")


def _read_bert_folder(path: Path, config: dict, model: nn.Module) -> WeightSource:
    from transformers import BertModel

    tower = getattr(model, "text", None)
    if not isinstance(tower, BertTower):
        raise PersonvlError(f"{path} holds BERT weights but the text tower of {model.name} is not BERT")
    differing = [f"{name} {config.get(name)!r} (model: {tower.bert_settings[name]!r})"
                 for name in ARCHITECTURE_FIELDS if config.get(name) != tower.bert_settings[name]]
    if differing:
        raise PersonvlError(f"BERT in {path} is another architecture than the {model.name} text tower: "
                            + ", ".join(differing))
    from transformers.utils import logging as hf_logging

    # transformers logs the keys it skipped (reported below, strictly) and draws progress bars.
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        bert, info = BertModel.from_pretrained(str(path), output_loading_info=True, add_pooling_layer=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise PersonvlError(f"cannot read the BERT weights in {path}: {str(exc).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    absent = set(info.get("missing_keys") or ())
    state = {f"text.bert.{key}": value for key, value in bert.state_dict().items() if key not in absent}
    # Pre-training heads (masked-LM, next-sentence) are not part of the encoder.
    unexpected = [f"text.bert.{key}" for key in info.get("unexpected_keys") or () if not key.startswith("cls.")]
    tokenizer = path if any((path / name).is_file() for name in BERT_TOKENIZER_FILES) else None
    # BERT fills the encoder; a projection after it (UniPT, VAL-PAT) is not in such a folder.
    return WeightSource(path, "bert", state, optional_prefixes=("text.bert.pooler.",), tokenizer_dir=tokenizer,
                        unexpected=unexpected, covers=("text.bert.",))


def _read_plip(path: Path, checkpoint: dict) -> WeightSource:
    image = _strip_module_prefix(checkpoint["ImgEncoder_state_dict"])
    text = _strip_module_prefix(checkpoint.get("TxtEncoder_state_dict") or {})
    state = {f"visual.{key}": value for key, value in image.items()}
    notes = []
    for key, value in text.items():
        if key in PLIP_STALE_TEXT_KEYS:
            notes.append(f"dropped {key} (a buffer transformers recomputes)")
        elif key.startswith("encoder."):
            state["text.bert." + key[len("encoder."):]] = value
        else:
            state[f"text.{key}"] = value    # reported as unexpected by the strict check
    if "epoch" in checkpoint:
        notes.append(f"PLIP checkpoint of epoch {checkpoint['epoch']}")
    return WeightSource(path, "plip", state, notes=notes)


def _read_openai_torchscript(path: Path, model: nn.Module) -> WeightSource:
    archive = read_torchscript_weights(path)
    state = {k: v for k, v in archive.state_dict.items() if k not in OPENAI_METADATA_KEYS}
    quick_gelu = any(name.rsplit(".", 1)[-1] == "QuickGELU" for name in archive.class_names)
    source = _from_clip_names(path, "openai-clip", state, model)
    source.quick_gelu = quick_gelu
    return source


def _classify_state_dict(path: Path, state: dict[str, torch.Tensor], model: nn.Module) -> WeightSource:
    state = _strip_module_prefix(state)
    if any(key.startswith(CLIP_TEXT_KEYS) for key in state) and any(key.startswith("visual.") for key in state):
        return _from_clip_names(path, "open_clip", state, model)
    if any(part_of(key) != "other" for key in state):
        # personvl names (also open_clip's CustomTextCLIP layout, which keeps the text tower under text.)
        return WeightSource(path, "state-dict", state)
    return _backbone_state_dict(path, state, model)


def _from_clip_names(path: Path, kind: str, state: dict[str, torch.Tensor], model: nn.Module) -> WeightSource:
    renamed = {}
    for key, value in state.items():
        renamed[f"text.{key}" if key.startswith(CLIP_TEXT_KEYS) else key] = value
    source = WeightSource(path, kind, renamed)
    _fit_attention_pool(source, model)
    return source


def _fit_attention_pool(source: WeightSource, model: nn.Module) -> None:
    """A CLIP ModifiedResNet file for a tower whose attention pool is another design (PLIP's:
    8 heads to 768-d, CLIP RN50's: 32 heads to 1024-d). The pool's projections would fit or
    not tensor by tensor, but their heads would not mean what they meant, so the pool is
    taken whole or not at all: here the trunk loads and the pool stays as initialised, named
    in the load report. CLIP's ResNets have width / 2 heads, width being twice the stem's
    first convolution's channels."""
    visual = getattr(model, "visual", None)
    projection, stem = source.state.get("visual.attnpool.c_proj.weight"), source.state.get("visual.conv1.weight")
    if not isinstance(visual, ModifiedResNetTower) or projection is None or stem is None:
        return
    theirs = (stem.shape[0], projection.shape[0])
    ours = (visual.attnpool.num_heads, visual.attnpool.c_proj.out_features)
    if theirs == ours:
        return
    for key in [k for k in source.state if k.startswith("visual.attnpool.")]:
        del source.state[key]
    source.leaves["visual.attnpool."] = (f"the file's attention pool ({theirs[0]} heads to {theirs[1]}-d) is not this "
                                         f"model's ({ours[0]} heads to {ours[1]}-d): left as initialised")


def _fit_position_embeddings(source: WeightSource, model: nn.Module) -> None:
    """Position embeddings interpolated to the model's grid, class or mean token kept: CLIP's
    square grids (14x14 for ViT-B/16 at 224, 7x7 for RN50) to the grid of the model's input
    size, and a grid of the model's own shape at another scale (PLIP's 8x4 at 256x128 to the
    16x8 of ``last_stride=1``, or back)."""
    visual = getattr(model, "visual", None)
    if isinstance(visual, VisionTransformerTower):
        key = "visual.positional_embedding"
    elif isinstance(visual, ModifiedResNetTower):
        key = "visual.attnpool.positional_embedding"
    else:
        return
    embedding = source.state.get(key)
    tokens = 1 + visual.grid_size[0] * visual.grid_size[1]
    if embedding is None or embedding.dim() != 2 or embedding.shape[0] == tokens:
        return
    old = _grid_holding(embedding.shape[0] - 1, visual.grid_size)
    if old is None:
        return   # neither square nor the model's shape: left for the strict shape check to report
    source.state[key] = resize_position_embedding(embedding, visual.grid_size, old)
    source.notes.append(f"{key} interpolated from {old[0]}x{old[1]} to {visual.grid_size[0]}x{visual.grid_size[1]}")


def _grid_holding(tokens: int, like: tuple[int, int]) -> tuple[int, int] | None:
    """The grid of ``tokens`` cells that is square, or else has the aspect of ``like``."""
    side = math.isqrt(tokens)
    if side * side == tokens:
        return (side, side)
    for rows in range(1, tokens + 1):
        if tokens % rows == 0 and rows * like[1] == (tokens // rows) * like[0]:
            return (rows, tokens // rows)
    return None


def _backbone_state_dict(path: Path, state: dict[str, torch.Tensor], model: nn.Module) -> WeightSource:
    visual = getattr(model, "visual", None)
    if isinstance(visual, TimmTower):
        renamed = {f"visual.trunk.{key}": value for key, value in state.items()}
        prefixes = tuple(f"visual.trunk.{p}" for p in TIMM_CLASSIFIER_PREFIXES)
        # An ImageNet backbone fills the trunk; the projection head is personvl's own.
        return WeightSource(path, "timm", renamed, optional_prefixes=prefixes, covers=("visual.trunk.",))
    source = WeightSource(path, "image-backbone", {f"visual.{key}": value for key, value in state.items()})
    _fit_attention_pool(source, model)
    return source


def _strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DataParallel / DistributedDataParallel checkpoints prefix every key with "module.".
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module."):]: value for key, value in state.items()}
    return dict(state)
