"""Pedestrian attribute recognition transfer (PA-100K, PETA, RAP).

A classifier head (batch norm, then one linear layer: one logit per attribute) on the
encoder's L2-normalised image embedding, trained with binary cross-entropy weighted by each
attribute's positive ratio in the training split (rare positives weigh more). ``mode:
finetune`` trains the image tower with the head; ``mode: linear_probe`` embeds each split once
with the frozen encoder and trains the head alone. The head is saved into the model folder
(``task_head.safetensors``), so ``evaluate`` and ``personvl eval attributes`` find it.

Metrics: mA, instance accuracy, precision, recall and F1 (sigmoid > 0.5); the model is
selected on mA of the val split.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from personvl.config import load_config
from personvl.errors import UsageError
from personvl.tasks.finetuning import (
    MODEL_DIR, EvaluationTarget, FinetuneData, ModelSpec, ProbeConfig, SelectionConfig, ShuffledBatches, check_mode,
    elapsed, embed_records, evaluation_place, evaluation_setting, fit_probe, model_transform, open_encoder,
    probe_selection, random_batches, read_split, read_task_head, save_task_head, start_run, train_and_select,
    training_loader, validation_split, write_summary,
)
from personvl.training.optim import OptimConfig
from personvl.training.trainer import TrainerConfig

TASK = "attributes"


@dataclass
class AttributeData(FinetuneData):
    dataset: str = "pa100k"
    identities_per_batch: int = 16     # attribute sets have no identities: batches of P x K images
    images_per_identity: int = 4
    transform: str = "reid"


@dataclass
class AttributeOptim(OptimConfig):
    name: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 5e-4
    warmup_steps: int = 5


@dataclass
class AttributeLoss:
    weighted: bool = True              # positive-ratio weights (exp(1 - r) on positives, exp(r) on negatives)
    head_lr_scale: float = 10.0


@dataclass
class AttributeConfig:
    output_dir: str = "runs/attributes"
    mode: str = "finetune"             # finetune | linear_probe
    data: AttributeData = field(default_factory=AttributeData)
    model: ModelSpec = field(default_factory=ModelSpec)
    optim: AttributeOptim = field(default_factory=AttributeOptim)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loss: AttributeLoss = field(default_factory=AttributeLoss)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    evaluation: EvaluationTarget = field(default_factory=EvaluationTarget)

    def __post_init__(self) -> None:
        check_mode(self.mode)


def load_attribute_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> AttributeConfig:
    return load_config(AttributeConfig, path, overrides)


class AttributeHead(nn.Module):
    """Embedding -> batch norm -> one logit per attribute."""

    def __init__(self, dim: int, count: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)
        self.logits = nn.Linear(dim, count)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.logits(self.norm(embeddings))


class AttributeMethod(nn.Module):
    def __init__(self, encoder, head: AttributeHead, positive_ratio: torch.Tensor | None, loss: AttributeLoss):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.loss_config = loss
        self.register_buffer("positive_ratio", positive_ratio if positive_ratio is not None else torch.zeros(0),
                             persistent=False)

    def forward(self, batch: dict, progress: float = 0.0, step: int = 0) -> dict[str, torch.Tensor]:
        embeddings = F.normalize(self.encoder.visual(batch["image"]), dim=-1)
        return {"loss": attribute_loss(self.head(embeddings), batch["attributes"],
                                       self.positive_ratio if self.loss_config.weighted else None)}

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.encoder.visual.parameters()), "name": "image"},
                {"params": list(self.head.parameters()), "lr_scale": self.loss_config.head_lr_scale, "name": "head"}]


def attribute_loss(logits: torch.Tensor, labels: torch.Tensor, positive_ratio: torch.Tensor | None) -> torch.Tensor:
    from personvl.objectives import attribute_bce_loss

    return attribute_bce_loss(logits, labels, positive_ratio if positive_ratio is not None and positive_ratio.numel()
                              else None)


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
    import warnings

    from personvl.evaluation import AttributeWarning, attribute_metrics

    with warnings.catch_warnings():
        # Small validation splits lack some attributes; the test report keeps the warning.
        warnings.simplefilter("ignore", AttributeWarning)
        return attribute_metrics(_probabilities(head.eval(), features), _labels(records), attribute_names=names)


def _head_from(head: Any, dim: int, count: int) -> AttributeHead | None:
    if head is None or isinstance(head, nn.Module):
        return head
    found = read_task_head(head, TASK)
    if found is None:
        raise UsageError(f"{head} holds no attribute head")
    settings, weights = found
    module = AttributeHead(dim, int(settings["attributes"]))
    module.load_state_dict(weights)
    if module.logits.out_features != count:
        raise UsageError(f"the attribute head predicts {module.logits.out_features} attributes, the data has {count}")
    return module.eval()


class AttributePredictor:
    """A fine-tuned encoder's attribute head: image batches -> attribute name -> probability."""

    def __init__(self, encoder, head: AttributeHead, names: Sequence[str]):
        if len(names) != head.logits.out_features:
            names = [f"attribute_{i}" for i in range(head.logits.out_features)]
        self.encoder, self.head, self.names = encoder.eval(), head.eval(), list(names)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> list[dict[str, float]]:
        probabilities = torch.sigmoid(self.head(self.encoder.encode_image(images))).tolist()
        return [dict(zip(self.names, row)) for row in probabilities]


def load_attribute_predictor(model_dir: str | os.PathLike, encoder=None) -> AttributePredictor | None:
    """The attribute predictor of a model folder written by attribute fine-tuning (or a linear
    probe), or None when the folder holds no attribute head. ``encoder``: the folder's encoder
    when already loaded."""
    from personvl.models import load_model

    found = read_task_head(model_dir, TASK)
    if found is None:
        return None
    settings, weights = found
    head = AttributeHead(int(settings["dim"]), int(settings["attributes"]))
    head.load_state_dict(weights)
    return AttributePredictor(encoder if encoder is not None else load_model(model_dir), head,
                              settings.get("names") or [])


def evaluate(model, dataset: str, root: str | os.PathLike, *, split: str = "test", head: Any = None,
             batch_size: int = 64, plots_dir: str | os.PathLike | None = None, probe: ProbeConfig | None = None,
             dataset_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Attribute metrics of ``model`` on a split of ``dataset``. ``head``: the attribute head
    (module, or a model folder holding one); without it, a linear probe is trained on the
    frozen embeddings of the train split (selected on val where the set has one) and then
    scored. ``plots_dir``: write the per-attribute accuracy chart there."""
    import personvl.data as data_module

    options = dataset_options or {}
    records = data_module.load_dataset(dataset, root, split, **options)
    labels = _labels(records)
    module = _head_from(head, model.embed_dim, labels.shape[1])
    probed = module is None
    if probed:
        data = FinetuneData(dataset=dataset, root=str(root), options=options)
        module, _ = _train_probe(model, data, probe or ProbeConfig(), "mA", 0, batch_size, seed=0)
    features = embed_records(model, records, batch_size)
    metrics = attribute_scores(module, features, records, records.attribute_names)
    metrics.update({"dataset": dataset, "split": split, "head": "linear probe" if probed else "trained head"})
    if plots_dir is not None:
        from personvl.evaluation import plot_attribute_accuracy

        plot_attribute_accuracy(metrics["per_attribute_mA"], metrics["attribute_names"],
                                Path(plots_dir) / "attributes.png", title="Per-attribute mA")
    return metrics


def _train_probe(encoder, data: FinetuneData, probe: ProbeConfig, metric: str, every_n_steps: int,
                 batch_size: int, seed: int, weighted: bool = True):
    """A head on frozen embeddings of ``data``'s train split, selected on its val split."""
    train = read_split(data, data.train_split)
    val_split = validation_split(data)
    val = read_split(data, val_split) if val_split else None
    features = embed_records(encoder, train, batch_size)
    labels = torch.tensor(_labels(train), dtype=torch.float32)
    ratio = positive_ratio(train) if weighted else None
    head = AttributeHead(encoder.embed_dim, labels.shape[1])

    def loss_fn(module: AttributeHead, index: torch.Tensor) -> torch.Tensor:
        return attribute_loss(module(features[index]), labels[index], ratio)

    validate = None
    if val is not None:
        val_features = embed_records(encoder, val, batch_size)

        def validate(module: AttributeHead) -> dict[str, Any]:
            return attribute_scores(module, val_features, val)

    history, kept = fit_probe(head, loss_fn, random_batches(len(train), probe.batch_size, seed), probe, validate,
                              metric, every_n_steps, seed=seed)
    return head, probe_selection(history, kept, val_split if validate is not None else None, metric)


def finetune(config: AttributeConfig | str | os.PathLike, overrides: Sequence[str] = (), *, resume: bool = False,
             echo=print) -> dict[str, Any]:
    """Train an attribute head (with the image tower, or alone on frozen embeddings); returns
    the run summary (also in ``output_dir/summary.json``; test figures in ``metrics.json``)."""
    import lightning.pytorch as pl

    from personvl.data.datasets import PersonImageDataset
    from personvl.evaluation import write_report
    from personvl.models import save_model

    if not isinstance(config, AttributeConfig):
        config = load_attribute_config(config, overrides)
    started = time.perf_counter()
    out, checkpoint = start_run(config, resume)
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    encoder = open_encoder(config.model)
    metric = config.selection.metric or "mA"
    if config.mode == "finetune":
        train = read_split(config.data, config.data.train_split)
        labels = _labels(train)
        val_split = validation_split(config.data)
        val = read_split(config.data, val_split) if val_split else None
        head = AttributeHead(encoder.embed_dim, labels.shape[1])
        method = AttributeMethod(encoder.train(), head, positive_ratio(train), config.loss)
        dataset = PersonImageDataset(train, model_transform(encoder, config.data.transform, train=True),
                                     seed=config.trainer.seed)
        batches = ShuffledBatches(len(train), config.data.identities_per_batch * config.data.images_per_identity,
                                  seed=config.trainer.seed)
        loader = training_loader(dataset, batches, config.data.workers)

        def validate(trained: AttributeMethod) -> dict[str, Any]:
            return attribute_scores(trained.head, embed_records(trained.encoder, val, config.evaluation.batch_size), val)

        echo(f"fine-tuning {config.model.name} for {labels.shape[1]} attributes on {len(train)} {config.data.dataset} "
             f"images for {config.trainer.max_steps} steps -> {out}")
        steps, selection = train_and_select(config, method, loader, out, checkpoint,
                                            validate if val is not None else None, metric, val_split)
        encoder = method.encoder.eval()
        head = method.head.eval()
    else:
        echo(f"linear probe of {config.model.name} for attributes on {config.data.dataset}")
        head, selection = _train_probe(encoder, config.data, config.probe, metric, config.selection.every_n_steps,
                                       config.evaluation.batch_size, config.trainer.seed, config.loss.weighted)
        steps = config.probe.steps
    save_model(encoder, out / MODEL_DIR)
    named = train if config.mode == "finetune" else read_split(config.data, config.data.train_split)
    save_task_head(out / MODEL_DIR, TASK, head, {"kind": "classifier", "dim": encoder.embed_dim,
                                                 "attributes": head.logits.out_features,
                                                 "names": list(getattr(named, "attribute_names", None) or [])})
    dataset_name, root, cross = evaluation_place(config)
    metrics = evaluate(encoder, dataset_name, root, split=config.evaluation.split, head=head,
                       batch_size=config.evaluation.batch_size, plots_dir=out if config.evaluation.plots else None,
                       dataset_options=config.evaluation.options)
    metrics.update(evaluation_setting(config, dataset_name, cross))
    write_report(metrics, out, task=TASK)
    summary = {"task": TASK, "mode": config.mode, "model": config.model.name, "steps": steps, "selection": selection,
               "metrics": {k: metrics[k] for k in ("mA", "accuracy", "precision", "recall", "F1")},
               "train_dataset": config.data.dataset, "eval_dataset": dataset_name, "cross_domain": cross,
               "model_dir": str(out / MODEL_DIR), "seconds": elapsed(started)}
    write_summary(out, summary)
    return summary
