"""Weights named instead of given as a path: the published starting points of a tower.

- ``openai`` (or any other pretrained tag open_clip lists, e.g. ``laion2b_s34b_b88k``): the
  CLIP weights of the architecture whose image tower the model has (CLIP RN50 for ``plip-rn50``
  and ``clip-rn50``, CLIP ViT-B/16 for ``unipt-vitb16`` and ``clip-vitb16*``), found by
  open_clip's own table;
- a timm pretrained name (``resnet50.tv_in1k``): the ImageNet weights of a timm image tower of
  that architecture;
- a Hugging Face model name (``bert-base-uncased``): a BERT text tower and its tokenizer.

A name is looked up in the local caches first (the Hugging Face cache, ``HF_HUB_CACHE`` or
``HF_HOME/hub``, which transformers, timm and open_clip share; and ``~/.cache/clip`` for
OpenAI files fetched by URL), so a machine that has the files never touches the network. Only
when they are absent is the hub asked, once and quickly (never with ``HF_HUB_OFFLINE=1``);
without a network the error says what to download and where to pass it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personvl.errors import PersonvlError
from personvl.models.tokenization import BERT_TOKENIZER_FILES, hub_reachable

# The image tower settings that identify each open_clip architecture personvl can hold.
CLIP_IMAGE_ARCHITECTURES = {
    "RN50": dict(type="modified_resnet", layers=[3, 4, 6, 3], width=64),
    "RN101": dict(type="modified_resnet", layers=[3, 4, 23, 3], width=64),
    "ViT-B-32": dict(type="vision_transformer", patch_size=32, width=768, layers=12),
    "ViT-B-16": dict(type="vision_transformer", patch_size=16, width=768, layers=12),
    "ViT-L-14": dict(type="vision_transformer", patch_size=14, width=1024, layers=24),
}
OPENAI_URL_CACHE = Path("~/.cache/clip")         # where OpenAI's clip package keeps RN50.pt ...
OPEN_CLIP_HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TIMM_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
BERT_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
BERT_HUB_FILES = ("config.json", *BERT_TOKENIZER_FILES, "tokenizer_config.json")


@dataclass(frozen=True)
class HubWeights:
    """A name resolved to files on this machine."""

    name: str
    path: Path
    description: str            # what the name stands for, e.g. "open_clip RN50 'openai'"
    quick_gelu: bool | None = None


def is_hub_name(value: str | os.PathLike) -> bool:
    """A value that names weights rather than locating them: no such path here, and not
    written like a path (hub names are ``name`` or ``owner/name``)."""
    text = os.fspath(value)
    if not text or Path(text).expanduser().exists():
        return False
    return not (text.startswith((".", "/", "~")) or text.endswith(("/", ".pt", ".pth", ".tar", ".bin", ".safetensors"))
                or text.count("/") > 1 or "\\" in text)


def hub_cache() -> Path:
    """The Hugging Face cache folder in use (``HF_HUB_CACHE``, else ``HF_HOME/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve_hub_weights(name: str, part: str | None, model_config: Any) -> HubWeights:
    """The files ``name`` stands for as ``part`` (``image``, ``text`` or None: the whole
    model) of a model with ``model_config``."""
    image, text = model_config.image_tower, model_config.text_tower
    clip = clip_architecture(image) if part in (None, "image") else None
    if clip is not None and name in _open_clip_tags(clip):
        return _open_clip_weights(name, clip)     # a whole CLIP file: as the model's weights, or its image tower
    if part is None:
        raise PersonvlError(f"weights {name} do not exist (a published name starts one tower: "
                            f"weights={{'image': ...}} or {{'text': ...}})")
    if part == "image":
        if image.get("type") == "timm" and "." in name and name.split(".")[0] == image["model_name"]:
            return _timm_weights(name, image)
        raise PersonvlError(_unknown_image_name(name, image, clip))
    if text.get("type") == "bert":
        return _bert_weights(name, model_config.architecture)
    raise PersonvlError(f"weights {name!r}: no such file or folder, and {model_config.architecture}'s text tower "
                        "(not BERT) takes no hub name")


def clip_architecture(image_tower: dict[str, Any]) -> str | None:
    """The open_clip architecture with this image tower's shape (heads and output size aside:
    see ``weight_formats``), or None."""
    for name, settings in CLIP_IMAGE_ARCHITECTURES.items():
        if all(_plain(image_tower.get(key)) == value for key, value in settings.items()):
            return name
    return None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _open_clip_tags(architecture: str) -> list[str]:
    import open_clip

    return list(open_clip.list_pretrained_tags_by_model(architecture))


def _unknown_image_name(name: str, image: dict[str, Any], clip: str | None) -> str:
    if clip is not None:
        tags = _open_clip_tags(clip)
        return (f"image weights {name!r}: no such file, and open_clip has no {clip} weights of that name "
                f"(it has: {', '.join(tags[:8])}{', ...' if len(tags) > 8 else ''})")
    if image.get("type") == "timm":
        return (f"image weights {name!r}: no such file, and not a timm name of this {image['model_name']} tower "
                f"(e.g. {image['model_name']}.tv_in1k; timm.list_pretrained('{image['model_name']}*') lists them)")
    return f"image weights {name!r}: no such file, and no published weights have this image tower's shape"


def _open_clip_weights(tag: str, architecture: str) -> HubWeights:
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    config = get_pretrained_cfg(architecture, tag)
    description = f"open_clip {architecture} {tag!r}"
    quick_gelu = bool(config.get("quick_gelu", False))
    hub_id = config.get("hf_hub", "")
    repo_id, file_name = os.path.split(hub_id) if hub_id else ("", "")
    candidates = (file_name,) if file_name else OPEN_CLIP_HUB_FILES
    cached = _hub_cached(repo_id, candidates) if repo_id else None
    url = config.get("url", "")
    if cached is None and url and (OPENAI_URL_CACHE.expanduser() / os.path.basename(url)).is_file():
        cached = OPENAI_URL_CACHE.expanduser() / os.path.basename(url)
    if cached is None:
        where = f"https://huggingface.co/{repo_id}" if repo_id else url
        file = os.path.basename(url) if url else candidates[0]
        _require_hub(f"image weights {tag!r} ({description}) are not in the Hugging Face cache {hub_cache()}"
                     f"{' or ' + str(OPENAI_URL_CACHE) if url else ''}", f"download {url or where} and pass the file "
                     f"as the image weights (model.weights.image=PATH/{file})")
        try:
            cached = Path(download_pretrained(config))
        except Exception as exc:  # open_clip wraps the hub's errors in its own
            raise PersonvlError(f"cannot download {description}: {_first_line(exc)}") from None
    return HubWeights(tag, cached, description, quick_gelu)


def _timm_weights(name: str, image: dict[str, Any]) -> HubWeights:
    import timm.models

    if image.get("model_kwargs"):
        raise PersonvlError(f"image weights {name!r}: this {image['model_name']} tower is built at another size "
                            f"({image['model_kwargs']}) than timm's published weights")
    config = timm.models.get_pretrained_cfg(name)
    if config is None or not config.hf_hub_id:
        raise PersonvlError(f"image weights {name!r}: timm publishes no weights of that name on the Hugging Face hub "
                            f"(timm.list_pretrained('{image['model_name']}*') lists those it has)")
    description = f"timm {name}"
    cached = _hub_cached(config.hf_hub_id, TIMM_HUB_FILES)
    if cached is None:
        _require_hub(f"image weights {name!r} ({description}) are not in the Hugging Face cache {hub_cache()}",
                     f"download https://huggingface.co/{config.hf_hub_id} (model.safetensors) and pass the file as "
                     "the image weights (model.weights.image=PATH/model.safetensors)")
        cached = _hub_download(config.hf_hub_id, TIMM_HUB_FILES, description)
    return HubWeights(name, cached, description)


def _bert_weights(name: str, architecture: str) -> HubWeights:
    from huggingface_hub import snapshot_download

    description = f"Hugging Face {name}"
    folder = _cached_snapshot(name)
    if folder is None:
        _require_hub(f"text weights {name!r} ({description}) are not in the Hugging Face cache {hub_cache()}",
                     f"download config.json, model.safetensors and vocab.txt of https://huggingface.co/{name} into "
                     "a folder and pass it as the text weights (model.weights.text=FOLDER)")
        try:
            folder = Path(snapshot_download(name, allow_patterns=[*BERT_HUB_FILES, BERT_WEIGHT_FILES[0]]))
            if not _bert_complete(folder):
                folder = Path(snapshot_download(name, allow_patterns=[*BERT_HUB_FILES, *BERT_WEIGHT_FILES[1:]]))
        except Exception as exc:  # the hub client raises many error types
            raise PersonvlError(f"cannot download {description} for {architecture}: {_first_line(exc)}") from None
        if not _bert_complete(folder):
            raise PersonvlError(f"{description} has no BERT weights (config.json and model.safetensors or "
                                "pytorch_model.bin)")
    return HubWeights(name, folder, description)


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (the hub client's error types differ between versions)
        return None
    return folder if _bert_complete(folder) else None


def _bert_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in BERT_WEIGHT_FILES)


def _hub_cached(repo_id: str, files: tuple[str, ...]) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for name in files:
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str):
            return Path(found)
    return None


def _hub_download(repo_id: str, files: tuple[str, ...], description: str) -> Path:
    from huggingface_hub import hf_hub_download

    error: Exception | None = None
    for name in files:
        try:
            return Path(hf_hub_download(repo_id, name))
        except Exception as exc:  # try the next file name; report the last failure
            error = exc
    raise PersonvlError(f"cannot download {description}: {_first_line(error)}")


def _require_hub(absent: str, instead: str) -> None:
    if not hub_reachable():
        raise PersonvlError(f"{absent}, and the Hugging Face hub cannot be reached: {instead}")


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__
