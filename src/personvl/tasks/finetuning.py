"""What the downstream tasks share beyond the driver (:mod:`personvl.tasks.runner`): the
model's own transforms, P x K batches, embeddings of records and heads fitted on frozen
embeddings (linear probes)."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from personvl.tasks.runner import ProbeConfig, TaskData, _is_number


def model_transform(encoder, recipe: str, train: bool):
    """The augmentation ``recipe`` at the encoder's input size and normalisation."""
    from personvl.data.transforms import build_transform

    preprocess = encoder.config.preprocess
    return build_transform(recipe, train=train, height=preprocess.input_size[0], width=preprocess.input_size[1],
                           mean=tuple(preprocess.mean), std=tuple(preprocess.std))


def identity_batches(pids: Sequence[int], data: TaskData, seed: int, rank: int = 0, world_size: int = 1):
    """This rank's P x K batches of the records whose identities are ``pids``."""
    from torch.utils.data import BatchSampler

    from personvl.data.samplers import IdentitySampler

    sampler = IdentitySampler(pids, data.identities_per_batch, data.images_per_identity, seed=seed, rank=rank,
                              world_size=world_size)
    return BatchSampler(sampler, data.identities_per_batch * data.images_per_identity, drop_last=True)


def probe_selection(history: list[dict[str, Any]], kept: int, split: str | None, metric: str) -> dict[str, Any]:
    from personvl.tasks.runner import no_selection

    if split is None:
        return no_selection(kept)
    return {"split": split, "metric": metric, "kept_step": kept, "history": history}


def embed_records(model, records, batch_size: int = 64, normalize: bool = True) -> torch.Tensor:
    """[N, D] image embeddings of the records, in order (L2-normalised unless ``normalize=False``)."""
    from personvl.models.embedding import embed_images

    return torch.from_numpy(embed_images(model, [r.image_path for r in records], batch_size=batch_size, progress=False,
                                         normalize=normalize))


def fit_probe(head: nn.Module, loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
              batches: Callable[[int], torch.Tensor], probe: ProbeConfig, validate: Callable[[nn.Module], dict] | None,
              metric: str, every_n_steps: int, seed: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Train ``head`` for ``probe.steps`` Adam steps on ``loss_fn(head, batches(step))`` (index
    tensors into cached features); with ``validate``, keep the weights of the best validation
    score. Returns (history, kept step)."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=probe.lr, weight_decay=probe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, probe.steps)))))
    history: list[dict[str, Any]] = []
    best, best_step, best_state = None, probe.steps, None
    checkpoints = set(range(every_n_steps, probe.steps + 1, every_n_steps)) if every_n_steps > 0 else set()
    checkpoints.add(probe.steps)
    for step in range(1, probe.steps + 1):
        head.train()
        optimizer.zero_grad()
        loss = loss_fn(head, batches(step))
        loss.backward()
        optimizer.step()
        schedule.step()
        if validate is not None and step in checkpoints:
            head.eval()
            with torch.no_grad():
                metrics = validate(head)
            history.append({"step": step, "loss": float(loss.detach()), **{k: float(v) for k, v in metrics.items() if _is_number(v)}})
            if best is None or metrics[metric] > best:
                best, best_step = float(metrics[metric]), step
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    return history, best_step


def random_batches(size: int, batch_size: int, seed: int) -> Callable[[int], torch.Tensor]:
    def draw(step: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        if size <= batch_size:
            return torch.arange(size)
        return torch.randperm(size, generator=generator)[:batch_size]

    return draw


