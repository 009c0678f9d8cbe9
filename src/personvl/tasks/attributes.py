"""Pedestrian attribute recognition transfer (PA-100K, PETA, RAP).

A classifier head (batch norm, then one linear layer: one logit per attribute) on the
encoder's L2-normalised image embedding, trained with binary cross-entropy weighted by each
attribute's positive ratio in the training split (rare positives weigh more). ``mode:
finetune`` trains the image tower with the head; ``mode: linear_probe`` embeds each split once
with the frozen encoder and trains the head alone. The head is saved into the model folder
(``heads/attributes.safetensors``), so ``evaluate`` and ``personvl eval attributes`` find it.

Metrics: mA, instance accuracy, precision, recall and F1 (sigmoid > 0.5); the model is
selected on mA of the val split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from personvl.errors import UsageError
from personvl.tasks.finetuning import (
    embed_records, fit_probe, model_transform, probe_selection, random_batches,
)
from personvl.tasks.runner import (
    EvaluationTarget, ProbeConfig, Stage, Task, TaskData, Trained, task_config,
)
from personvl.training.optim import OptimConfig



@dataclass
class AttributeData(TaskData):
    dataset: str = "pa100k"
    batch_size: int = 64
    transform: str = "reid"


@dataclass
class AttributeLoss:
    weighted: bool = True              # positive-ratio weights (exp(1 - r) on positives, exp(r) on negatives)
    head_lr_scale: float = 10.0


@dataclass
class AttributeEvaluation(EvaluationTarget):
    # Domain generalisation across attribute sets: evaluation attribute -> the head's attribute
    # of the same meaning (PETA's accessoryHat -> PA-100K's Hat). Only mapped attributes are scored.
    attribute_map: dict[str, str] = field(default_factory=dict)


AttributeConfig = task_config(
    "AttributeConfig", __name__, probed=True, output_dir="runs/attributes", data=AttributeData,
    evaluation=AttributeEvaluation, loss=AttributeLoss,
    optim=lambda: OptimConfig("adam", lr=1e-4, weight_decay=5e-4, warmup_steps=5))


class AttributeHead(nn.Module):
    """Embedding -> batch norm -> one logit per attribute."""

    def __init__(self, dim: int, count: int, names: Sequence[str] | None = None):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)
        self.logits = nn.Linear(dim, count)
        self.names = list(names) if names and len(names) == count else [f"attribute_{i}" for i in range(count)]

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.logits(self.norm(embeddings))


class AttributeMethod(nn.Module):
    def __init__(self, encoder, head: AttributeHead, positive_ratio: torch.Tensor | None, loss: AttributeLoss):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.loss_config = loss
        encoder.text.requires_grad_(False)   # images only: DDP refuses parameters without a gradient
        self.register_buffer("positive_ratio", positive_ratio if positive_ratio is not None else torch.zeros(0),
                             persistent=False)

    def forward(self, batch: dict, progress: float = 0.0, step: int = 0) -> dict[str, torch.Tensor]:
        embeddings = F.normalize(self.encoder.visual(batch["image"]), dim=-1)
        from personvl.objectives import attribute_bce_loss

        weights = self.positive_ratio if self.loss_config.weighted and self.positive_ratio.numel() else None
        return {"loss": attribute_bce_loss(self.head(embeddings), batch["attributes"], weights)}

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.encoder.visual.parameters()), "name": "image"},
                {"params": list(self.head.parameters()), "lr_scale": self.loss_config.head_lr_scale, "name": "head"}]


def positive_ratio(records) -> torch.Tensor:
    labels = torch.tensor([r.attributes for r in records], dtype=torch.float32)
    return labels.mean(dim=0).clamp(1e-3, 1 - 1e-3)


def _labels(records) -> np.ndarray:
    if not records or any(r.attributes is None for r in records):
        raise UsageError("attribute recognition needs an attribute vector on every record")
    return np.array([r.attributes for r in records], dtype=np.int64)


def _probabilities(head: nn.Module, features: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(head(features)).numpy()


def attribute_scores(head: nn.Module, features: torch.Tensor, records, names=None) -> dict[str, Any]:
    """Validation scores (warnings about attributes a small split lacks are silenced)."""
    import warnings

    from personvl.evaluation import AttributeWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AttributeWarning)
        return _scores(head, features, _labels(records), names)


def _scores(head: nn.Module, features: torch.Tensor, labels: np.ndarray, names) -> dict[str, Any]:
    from personvl.evaluation import attribute_metrics

    return attribute_metrics(_probabilities(head.eval(), features), labels, attribute_names=names)


def _mapped_head(head: "AttributeHead", names: Sequence[str], mapping: dict[str, str]):
    """(a head predicting the mapped evaluation attributes in order, their columns in the data)."""
    unknown = sorted(set(mapping) - set(names))
    missing = sorted(set(mapping.values()) - set(head.names))
    if unknown or missing:
        raise UsageError(f"evaluation.attribute_map names attributes the data lacks {unknown[:3]} or the head lacks "
                         f"{missing[:3]}")
    columns = [i for i, name in enumerate(names) if name in mapping]
    rows = [head.names.index(mapping[names[c]]) for c in columns]
    mapped = AttributeHead(head.norm.num_features, len(rows), [names[c] for c in columns])
    mapped.norm.load_state_dict(head.norm.state_dict())
    with torch.no_grad():
        mapped.logits.weight.copy_(head.logits.weight[rows])
        mapped.logits.bias.copy_(head.logits.bias[rows])
    return mapped.eval(), columns


class AttributePredictor:
    """A fine-tuned encoder's attribute head: image batches -> attribute name -> probability."""

    def __init__(self, encoder, head: AttributeHead, names: Sequence[str]):
        if len(names) != head.logits.out_features:
            names = head.names
        self.encoder, self.head, self.names = encoder.eval(), head.eval(), list(names)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> list[dict[str, float]]:
        probabilities = torch.sigmoid(self.head(self.encoder.encode_image(images))).tolist()
        return [dict(zip(self.names, row)) for row in probabilities]


def load_attribute_predictor(model_dir: str | os.PathLike, encoder=None) -> AttributePredictor | None:
    """The attribute predictor of a model folder written by attribute fine-tuning (or a linear
    probe), or None when the folder holds no attribute head. ``encoder``: the folder's encoder
    when already loaded."""
    from personvl.tasks.heads import saved_heads

    if TASK.name not in saved_heads(model_dir):
        return None
    trained = TASK.load(model_dir, encoder)
    return AttributePredictor(trained.encoder, trained.head, trained.head.names)


def _train_probe(encoder, train, val, val_split: str | None, probe: ProbeConfig, metric: str, every_n_steps: int,
                 batch_size: int, seed: int, weighted: bool = True):
    """A head on frozen embeddings of ``train``, selected on ``val`` where given."""
    from personvl.objectives import attribute_bce_loss

    features = embed_records(encoder, train, batch_size)
    labels = torch.tensor(_labels(train), dtype=torch.float32)
    ratio = positive_ratio(train) if weighted else None
    head = AttributeHead(encoder.embed_dim, labels.shape[1], getattr(train, "attribute_names", None))

    def loss_fn(module: AttributeHead, index: torch.Tensor) -> torch.Tensor:
        return attribute_bce_loss(module(features[index]), labels[index], ratio)

    validate = None
    if val is not None:
        val_features = embed_records(encoder, val, batch_size)

        def validate(module: AttributeHead) -> dict[str, Any]:
            return attribute_scores(module, val_features, val)

    history, kept = fit_probe(head, loss_fn, random_batches(len(train), probe.batch_size, seed), probe, validate,
                              metric, every_n_steps, seed=seed)
    return head, probe_selection(history, kept, val_split if validate is not None else None, metric)


class AttributeTask(Task):
    """One logit per attribute from the image embedding; the classifier is the head."""

    name = "attributes"
    config_type = AttributeConfig
    metric = "mA"
    reported = ("mA", "accuracy", "precision", "recall", "F1")

    def stages(self, config: AttributeConfig, encoder, train, echo) -> list[Stage]:
        from personvl.data.datasets import PersonImageDataset
        from personvl.data.samplers import ShuffledBatches

        labels = _labels(train)
        head = AttributeHead(encoder.embed_dim, labels.shape[1], train.attribute_names)
        method = AttributeMethod(encoder, head, positive_ratio(train), config.loss)
        dataset = PersonImageDataset(train, model_transform(encoder, config.data.transform, train=True),
                                     seed=config.trainer.seed)
        size, batch, seed = len(train), config.data.batch_size, config.trainer.seed
        return [Stage("", method, dataset,
                      lambda rank, world: ShuffledBatches(size, batch, seed=seed, rank=rank, world_size=world),
                      config.optim, config.trainer.max_steps,
                      describe=f"fine-tuning {config.model.name} for {labels.shape[1]} attributes on {len(train)} "
                               f"{config.data.dataset} images for {config.trainer.max_steps} steps")]

    def probe(self, config: AttributeConfig, encoder, train, val_inputs, val_name):
        head, selection = _train_probe(encoder, train, val_inputs, val_name, config.probe,
                                       config.selection.metric or self.metric, config.selection.every_n_steps,
                                       config.evaluation.batch_size, config.trainer.seed, config.loss.weighted)
        return Trained(encoder, head), selection, config.probe.steps

    def score(self, model: Trained, records, settings: AttributeEvaluation, plots_dir: Path | None = None) -> dict[str, Any]:
        if model.head is None:
            raise UsageError("attribute scores need an attribute head (a fine-tuned folder, or evaluate() fits a probe)")
        labels = _labels(records)
        names = getattr(records, "attribute_names", None) or [f"attribute_{i}" for i in range(labels.shape[1])]
        head = model.head
        mapping = getattr(settings, "attribute_map", None)
        if mapping:
            head, columns = _mapped_head(head, names, mapping)
            labels, names = labels[:, columns], [names[c] for c in columns]
        elif head.logits.out_features != labels.shape[1]:
            raise UsageError(f"the attribute head predicts {head.logits.out_features} attributes, the data has "
                             f"{labels.shape[1]} (another attribute set: give evaluation.attribute_map)")
        features = embed_records(model.encoder, records, settings.batch_size)
        metrics = _scores(head, features, labels, names)
        if plots_dir is not None:
            from personvl.evaluation import plot_attribute_accuracy

            plot_attribute_accuracy(metrics["per_attribute_mA"], metrics["attribute_names"],
                                    Path(plots_dir) / "attributes.png", title="Per-attribute mA")
        return metrics

    def head_settings(self, head: AttributeHead) -> dict[str, Any]:
        return {"kind": "classifier", "dim": head.norm.num_features, "attributes": head.logits.out_features,
                "names": head.names}

    def build_head(self, settings: dict[str, Any], encoder) -> nn.Module:
        return AttributeHead(int(settings["dim"]), int(settings["attributes"]), settings.get("names"))


TASK = AttributeTask()


def evaluate(model, dataset: str, root: str | os.PathLike, *, split: str = "test", head: Any = None,
             batch_size: int = 64, plots_dir: str | os.PathLike | None = None, probe: ProbeConfig | None = None,
             dataset_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Attribute metrics of ``model`` (an encoder, a saved folder whose attribute head is used,
    or a registered name) on a split of ``dataset``. ``head``: an attribute head module to use
    instead; where there is none, a linear probe is trained on the frozen embeddings of the
    train split (selected on val where the set has one) and then scored. ``plots_dir``: write
    the per-attribute accuracy chart there."""
    import personvl.data as data_module
    from personvl.tasks.runner import evaluate_saved

    options = dataset_options or {}
    if not isinstance(model, Trained):
        model = TASK.load(model) if isinstance(model, (str, os.PathLike)) and Path(model).is_dir() else Trained(
            model if not isinstance(model, (str, os.PathLike)) else _open(model))
    if head is not None:
        model = Trained(model.encoder, head)
    probed = model.head is None
    if probed:
        train = data_module.load_dataset(dataset, root, "train", **options)
        val_split = "val" if "val" in data_module.dataset_splits(dataset, root, **options) else None
        val = data_module.load_dataset(dataset, root, val_split, **options) if val_split else None
        head, _ = _train_probe(model.encoder, train, val, val_split, probe or ProbeConfig(), "mA", 0, batch_size, seed=0)
        model = Trained(model.encoder, head)
    metrics = evaluate_saved(TASK, model, dataset, root, split=split, settings=AttributeEvaluation(batch_size=batch_size),
                             plots_dir=plots_dir, dataset_options=options)
    metrics["head"] = "linear probe" if probed else "trained head"
    return metrics


def _open(name):
    from personvl.models import open_model

    return open_model(name)


def finetune(config: AttributeConfig | str | os.PathLike, overrides: Sequence[str] = (), *, resume: bool = False,
             echo=print) -> dict[str, Any]:
    """Train an attribute head (with the image tower, or alone on frozen embeddings); returns
    the run summary (also in ``output_dir/summary.json``; test figures in ``metrics.json``)."""
    from personvl.tasks.runner import run

    return run(TASK, config, overrides, resume=resume, echo=echo)
