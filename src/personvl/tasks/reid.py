"""Image re-ID transfer (Market-1501, DukeMTMC-reID, MSMT17, CUHK03): the strong baseline.

Fine-tuning trains the image tower with a BNNeck (batch norm between the embedding and an
identity classifier without bias), the identity loss with label smoothing on the normalised
side and the batch-hard triplet loss on the embedding itself, over P x K batches of
augmented images (flip, pad + crop, random erasing), with a linear learning-rate warm-up.
Linear probing (``mode: linear_probe``) keeps the encoder frozen and learns only a linear
projection of its embeddings with the same two losses.

Evaluation uses the Market-1501 protocol (same identity *and* camera removed from each
query's gallery) with cosine distance on the encoder's L2-normalised embedding (the BNNeck
feeds the classifier only, so the saved model is an ordinary encoder), optionally
k-reciprocal re-ranked. A config naming another dataset under ``evaluation`` measures
domain generalisation.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from personvl.config import load_config
from personvl.errors import UsageError
from personvl.tasks.finetuning import (
    MODEL_DIR, EvaluationTarget, FinetuneData, ModelSpec, ProbeConfig, SelectionConfig, check_mode, elapsed,
    embed_records, evaluation_place, evaluation_setting, fit_probe, identity_batches, model_transform, open_encoder,
    probe_selection, read_split, read_task_head, save_task_head, start_run, train_and_select, training_loader,
    validation_split, write_summary,
)
from personvl.training.optim import OptimConfig
from personvl.training.trainer import TrainerConfig

TASK = "reid"


@dataclass
class ReidLosses:
    id_weight: float = 1.0
    triplet_weight: float = 1.0
    label_smoothing: float = 0.1
    margin: float = 0.3


@dataclass
class ReidData(FinetuneData):
    dataset: str = "market1501"
    transform: str = "reid"


@dataclass
class ReidOptim(OptimConfig):
    name: str = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    warmup_steps: int = 10


@dataclass
class ReidConfig:
    output_dir: str = "runs/reid"
    mode: str = "finetune"             # finetune | linear_probe
    data: ReidData = field(default_factory=ReidData)
    model: ModelSpec = field(default_factory=ModelSpec)
    optim: ReidOptim = field(default_factory=ReidOptim)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loss: ReidLosses = field(default_factory=ReidLosses)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    evaluation: EvaluationTarget = field(default_factory=EvaluationTarget)

    def __post_init__(self) -> None:
        check_mode(self.mode)


def load_reid_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> ReidConfig:
    return load_config(ReidConfig, path, overrides)


class ReidMethod(nn.Module):
    """Encoder image tower + BNNeck + identity classifier; ``forward`` gives the named losses."""

    def __init__(self, encoder, num_identities: int, losses: ReidLosses):
        super().__init__()
        self.encoder = encoder
        self.losses = losses
        self.bnneck = nn.BatchNorm1d(encoder.embed_dim)
        self.bnneck.bias.requires_grad_(False)   # BNNeck: no shift before the bias-free classifier
        self.classifier = nn.Linear(encoder.embed_dim, num_identities, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, batch: dict, progress: float = 0.0, step: int = 0) -> dict[str, torch.Tensor]:
        from personvl.objectives import batch_hard_triplet_loss, id_loss

        features = self.encoder.visual(batch["image"])
        pids = batch["pid"]
        cfg = self.losses
        losses = {"id": id_loss(self.classifier(self.bnneck(features)), pids, cfg.label_smoothing),
                  "triplet": batch_hard_triplet_loss(features, pids, cfg.margin)}
        losses["loss"] = cfg.id_weight * losses["id"] + cfg.triplet_weight * losses["triplet"]
        return losses

    def parameter_groups(self) -> list[dict]:
        # The text tower takes no part: it is left out of the optimiser.
        return [{"params": [*self.encoder.visual.parameters(), *self.bnneck.parameters(),
                            *self.classifier.parameters()], "name": "image+heads"}]


class ReidProjection(nn.Module):
    """A linear map of frozen L2-normalised embeddings (the linear probe's retrieval feature)."""

    def __init__(self, dim: int):
        super().__init__()
        self.projection = nn.Linear(dim, dim)
        with torch.no_grad():
            self.projection.weight.copy_(torch.eye(dim))
            self.projection.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection(features)


def reid_scores(query_features, gallery_features, query, gallery, rerank: bool = False) -> dict[str, Any]:
    from personvl.evaluation import reid_metrics

    return reid_metrics(query_features, gallery_features, _pids(query), _pids(gallery), _camids(query),
                        _camids(gallery), rerank=rerank)


def _pids(records) -> np.ndarray:
    if any(r.pid is None for r in records):
        raise UsageError("re-ID evaluation needs an identity on every record")
    return np.array([r.pid for r in records], dtype=np.int64)


def _camids(records) -> np.ndarray:
    return np.array([-1 if r.camid is None else r.camid for r in records], dtype=np.int64)


def _project(features: torch.Tensor, head: nn.Module | None) -> torch.Tensor:
    if head is None:
        return features
    with torch.no_grad():
        return nn.functional.normalize(head(features), dim=1)


def _head_from(head: Any, dim: int) -> nn.Module | None:
    """A projection module from a module, a model folder holding a re-ID head, or None."""
    if head is None or isinstance(head, nn.Module):
        return head
    found = read_task_head(head, TASK)
    if found is None:
        raise UsageError(f"{head} holds no re-ID head")
    module = ReidProjection(dim)
    module.load_state_dict(found[1])
    return module.eval()


def _query_gallery(dataset: str, root: str, split: str, **options):
    """The query and gallery records of ``split``: "test" is the query/gallery pair of re-ID
    sets; any other split is searched all-against-all (each image queries the others)."""
    import personvl.data as data_module

    splits = data_module.dataset_splits(dataset, root, **options)
    if split == "test" and {"query", "gallery"} <= set(splits):
        return (data_module.load_dataset(dataset, root, "query", **options),
                data_module.load_dataset(dataset, root, "gallery", **options))
    records = data_module.load_dataset(dataset, root, split, **options)
    return records, records


def evaluate(model, dataset: str, root: str | os.PathLike, *, split: str = "test", rerank: bool = False,
             head: Any = None, batch_size: int = 64, plots_dir: str | os.PathLike | None = None,
             dataset_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Re-ID metrics (R1/R5/R10/mAP/mINP, CMC) of ``model`` on ``dataset``: its query/gallery
    pair for ``split="test"``, else the split searched against itself. ``head``: a linear
    probe's projection (module, or the model folder holding it). ``plots_dir``: write the CMC
    curve and a ranking grid there."""
    query, gallery = _query_gallery(dataset, str(root), split, **(dataset_options or {}))
    projection = _head_from(head, model.embed_dim)
    query_features = _project(embed_records(model, query, batch_size), projection)
    gallery_features = query_features if gallery is query else _project(embed_records(model, gallery, batch_size),
                                                                         projection)
    metrics = reid_scores(query_features, gallery_features, query, gallery, rerank=rerank)
    metrics.update({"dataset": dataset, "split": split, "rerank": bool(rerank)})
    if plots_dir is not None:
        _plot(query_features, gallery_features, query, gallery, metrics, Path(plots_dir))
    return metrics


def _plot(query_features, gallery_features, query, gallery, metrics: dict, out: Path, shown: int = 6) -> None:
    from personvl.evaluation import plot_cmc, plot_reid_grid, ranked_gallery

    plot_cmc(metrics["cmc"], out / "cmc.png", title="CMC (re-ID)")
    rows = min(shown, len(query))
    k = min(8, len(gallery))
    ranked, correct = ranked_gallery(query_features[:rows], gallery_features, _pids(query)[:rows], _pids(gallery), k=k,
                                     query_camids=_camids(query)[:rows], gallery_camids=_camids(gallery))
    plot_reid_grid([r.image_path for r in query[:rows]], [r.image_path for r in gallery], ranked, correct,
                   out / "ranking.png")


def finetune(config: ReidConfig | str | os.PathLike, overrides: Sequence[str] = (), *, resume: bool = False,
             echo=print) -> dict[str, Any]:
    """Train (or linearly probe) an encoder for re-ID; returns the run summary (also in
    ``output_dir/summary.json``; the final figures in ``output_dir/metrics.json``)."""
    import lightning.pytorch as pl

    from personvl.data.datasets import PersonImageDataset
    from personvl.evaluation import write_report
    from personvl.models import save_model

    if not isinstance(config, ReidConfig):
        config = load_reid_config(config, overrides)
    started = time.perf_counter()
    out, checkpoint = start_run(config, resume)
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    encoder = open_encoder(config.model)
    train = read_split(config.data, config.data.train_split, relabel=True)
    val_split = validation_split(config.data)
    val = read_split(config.data, val_split) if val_split else None
    metric = config.selection.metric or "mAP"
    head = None
    if config.mode == "finetune":
        encoder.train()
        method = ReidMethod(encoder, len(train.identity_mapping or {}) or len({r.pid for r in train}), config.loss)
        dataset = PersonImageDataset(train, model_transform(encoder, config.data.transform, train=True),
                                     seed=config.trainer.seed)
        loader = training_loader(dataset, identity_batches([r.pid for r in train], config.data, config.trainer.seed),
                                 config.data.workers)

        def validate(trained: ReidMethod) -> dict[str, Any]:
            features = embed_records(trained.encoder, val, config.evaluation.batch_size)
            return reid_scores(features, features, val, val)

        echo(f"fine-tuning {config.model.name} for re-ID on {len(train)} {config.data.dataset} images "
             f"({len({r.pid for r in train})} identities) for {config.trainer.max_steps} steps -> {out}")
        steps, selection = train_and_select(config, method, loader, out, checkpoint,
                                            validate if val is not None else None, metric, val_split)
        encoder = method.encoder.eval()
    else:
        head, steps, selection = _linear_probe(config, encoder, train, val, val_split, metric, echo)
    save_model(encoder, out / MODEL_DIR)
    if head is not None:
        save_task_head(out / MODEL_DIR, TASK, head, {"kind": "projection", "dim": encoder.embed_dim})

    dataset_name, root, cross = evaluation_place(config)
    metrics = evaluate(encoder, dataset_name, root, split=config.evaluation.split, head=head,
                       batch_size=config.evaluation.batch_size, plots_dir=out if config.evaluation.plots else None,
                       dataset_options=config.evaluation.options, rerank=config.evaluation.rerank)
    metrics.update(evaluation_setting(config, dataset_name, cross))
    write_report(metrics, out, task=TASK)
    summary = {"task": TASK, "mode": config.mode, "model": config.model.name, "steps": steps,
               "selection": selection, "metrics": {k: metrics[k] for k in ("R1", "R5", "R10", "mAP", "mINP")},
               "train_dataset": config.data.dataset, "eval_dataset": dataset_name, "cross_domain": cross,
               "model_dir": str(out / MODEL_DIR), "seconds": elapsed(started)}
    write_summary(out, summary)
    return summary


def _linear_probe(config: ReidConfig, encoder, train, val, val_split: str | None, metric: str, echo):
    from personvl.objectives import batch_hard_triplet_loss, id_loss

    echo(f"linear probe of {config.model.name} for re-ID on {len(train)} {config.data.dataset} images")
    features = embed_records(encoder, train, config.evaluation.batch_size)
    pids = torch.tensor([r.pid for r in train])
    count = int(pids.max()) + 1
    projection = ReidProjection(encoder.embed_dim)
    bnneck = nn.BatchNorm1d(encoder.embed_dim)
    classifier = nn.Linear(encoder.embed_dim, count, bias=False)
    trained = nn.ModuleDict({"projection": projection, "bnneck": bnneck, "classifier": classifier})
    sampler = identity_batches(pids.tolist(), config.data, config.trainer.seed)
    batches = _cycle(sampler)

    def loss_fn(module: nn.ModuleDict, index: torch.Tensor) -> torch.Tensor:
        embedded = module["projection"](features[index])
        loss_id = id_loss(module["classifier"](module["bnneck"](embedded)), pids[index], config.loss.label_smoothing)
        loss_triplet = batch_hard_triplet_loss(embedded, pids[index], config.loss.margin)
        return config.loss.id_weight * loss_id + config.loss.triplet_weight * loss_triplet

    validate = None
    if val is not None:
        val_features = embed_records(encoder, val, config.evaluation.batch_size)

        def validate(module: nn.ModuleDict) -> dict[str, Any]:
            projected = _project(val_features, module["projection"])
            return reid_scores(projected, projected, val, val)

    history, kept = fit_probe(trained, loss_fn, batches, config.probe, validate, metric,
                              config.selection.every_n_steps, seed=config.trainer.seed)
    selection = probe_selection(history, kept, val_split if validate is not None else None, metric)
    return projection.eval(), config.probe.steps, selection


def _cycle(batch_sampler):
    """step -> index tensor of the next P x K batch, over as many epochs as needed."""
    state = {"epoch": 0, "iterator": None}

    def draw(step: int) -> torch.Tensor:
        while True:
            if state["iterator"] is None:
                batch_sampler.sampler.set_epoch(state["epoch"])
                state["iterator"] = iter(batch_sampler)
            try:
                return torch.tensor(next(state["iterator"]))
            except StopIteration:
                state["epoch"] += 1
                state["iterator"] = None

    return draw
