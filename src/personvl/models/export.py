"""ONNX export of a model's image and text encoders, checked against PyTorch."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from personvl.errors import PersonvlError
from personvl.models.encoder import PersonEncoder

IMAGE_ENCODER_FILE = "image_encoder.onnx"
TEXT_ENCODER_FILE = "text_encoder.onnx"
ONNX_CONFIG_FILE = "onnx_config.json"
TOLERANCE = 1e-4
SAMPLE_TEXTS = ("a woman in a red coat with a black backpack", "a man wearing blue jeans and white shoes",
                "a child in a yellow jacket")


class ImageEncoderGraph(nn.Module):
    """normalised images [B, 3, H, W] -> L2-normalised embeddings [B, D]."""

    def __init__(self, model: PersonEncoder):
        super().__init__()
        self.visual = model.visual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(images), dim=-1)


class TextEncoderGraph(nn.Module):
    """token ids and attention mask [B, L] (int64) -> L2-normalised embeddings [B, D]."""

    def __init__(self, model: PersonEncoder):
        super().__init__()
        self.text = model.text

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(input_ids, attention_mask), dim=-1)


@dataclass
class OnnxExport:
    image_encoder: Path
    text_encoder: Path
    config: Path
    image_max_abs_diff: float | None   # onnxruntime vs PyTorch on sample inputs (None: not verified)
    text_max_abs_diff: float | None


def export_onnx(model: PersonEncoder, out_dir: str | os.PathLike, *, opset: int = 17,
                verify: bool = True) -> OnnxExport:
    """Write ``image_encoder.onnx``, ``text_encoder.onnx`` (dynamic batch size), the tokenizer
    files and ``onnx_config.json`` (input size, mean, std, token length) to ``out_dir``. With
    ``verify`` onnxruntime runs both graphs on sample inputs and the outputs must match PyTorch
    within 1e-4."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PersonvlError(f"cannot write to {out_dir}: {exc.strerror}") from None
    was_training = model.training
    model.eval()
    try:
        # Traced with a batch of 2, checked with a batch of 3: the batch axis must stay dynamic.
        images = torch.randn(3, 3, *model.image_transform.size, device=model.device)
        tokens = model.tokenize(list(SAMPLE_TEXTS))
        image_file = out_dir / IMAGE_ENCODER_FILE
        text_file = out_dir / TEXT_ENCODER_FILE
        # eval() on the wrappers too: the exporter restores the wrapper's mode afterwards, and a
        # wrapper left in training mode would put the towers back into it.
        image_graph, text_graph = ImageEncoderGraph(model).eval(), TextEncoderGraph(model).eval()
        _export(image_graph, (images[:2],), image_file, ["images"], opset)
        _export(text_graph, (tokens.input_ids[:2], tokens.attention_mask[:2]), text_file,
                ["input_ids", "attention_mask"], opset)
        image_diff = text_diff = None
        if verify:
            with torch.inference_mode():
                expected_image = image_graph(images)
                expected_text = text_graph(tokens.input_ids, tokens.attention_mask)
            image_diff = _max_diff(image_file, {"images": images}, expected_image)
            text_diff = _max_diff(text_file, {"input_ids": tokens.input_ids,
                                              "attention_mask": tokens.attention_mask}, expected_text)
            for name, diff in (("image", image_diff), ("text", text_diff)):
                if diff > TOLERANCE:
                    raise PersonvlError(f"the exported {name} encoder differs from PyTorch by {diff:.2e} "
                                        f"(more than {TOLERANCE:g})")
    finally:
        model.train(was_training)
    model.tokenizer.save(out_dir / "tokenizer")
    config_file = out_dir / ONNX_CONFIG_FILE
    preprocess = model.config.preprocess
    config_file.write_text(json.dumps({
        "architecture": model.name,
        "embed_dim": model.embed_dim,
        "image_encoder": {"file": IMAGE_ENCODER_FILE, "input": "images", "input_size": list(preprocess.input_size),
                          "mean": list(preprocess.mean), "std": list(preprocess.std),
                          "interpolation": preprocess.interpolation},
        "text_encoder": {"file": TEXT_ENCODER_FILE, "inputs": _graph_inputs(text_file),
                         "max_length": model.tokenizer.max_length, "tokenizer": model.tokenizer.kind,
                         "tokenizer_files": "tokenizer"},
        "output": "embedding (L2-normalised)",
    }, indent=2) + "\n", encoding="utf-8")
    return OnnxExport(image_file, text_file, config_file, image_diff, text_diff)


def _export(graph: nn.Module, inputs: tuple, target: Path, input_names: list[str], opset: int) -> None:
    axes = {name: {0: "batch"} for name in input_names}
    axes["embedding"] = {0: "batch"}
    with warnings.catch_warnings():
        # The TorchScript-based exporter: the torch.export-based one needs onnxscript, which
        # personvl does not depend on, and warns that it is no longer the default.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(graph, inputs, str(target), input_names=input_names, output_names=["embedding"],
                              dynamic_axes=axes, opset_version=opset, dynamo=False)
        except Exception as exc:  # the exporter raises many types; the user needs the first line
            raise PersonvlError(f"ONNX export of {target.stem} failed: {str(exc).strip().splitlines()[0]}") from None


def _graph_inputs(onnx_file: Path) -> list[str]:
    import onnx

    return [value.name for value in onnx.load(str(onnx_file), load_external_data=False).graph.input]


def _max_diff(onnx_file: Path, inputs: dict[str, torch.Tensor], expected: torch.Tensor) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    # The exporter drops inputs a graph does not use (CLIP's causal text tower ignores the mask).
    wanted = {i.name for i in session.get_inputs()}
    feeds = {name: value.detach().cpu().numpy() for name, value in inputs.items() if name in wanted}
    (actual,) = session.run(["embedding"], feeds)
    return float(np.abs(actual - expected.detach().cpu().numpy()).max())
