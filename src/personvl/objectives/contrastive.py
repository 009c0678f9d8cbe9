"""Image-text alignment losses: identity-aware CMPM (PLIP), InfoNCE (CLIP), SDM (IRRA).

Under DDP every loss here contrasts the global batch: the embeddings and identities of all
ranks are gathered (``objectives.distributed``), every rank computes the loss of one process
on the concatenated batch, and the gradient after DDP's averaging is that process's gradient.
Identities must therefore be dataset-wide labels, not positions within a local batch.
``across_ranks=False`` keeps a loss on the local batch (and out of any collective).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from personvl.objectives.distributed import gather_batch

EPS = 1e-8


def identity_match_matrix(row_pids: torch.Tensor, col_pids: torch.Tensor) -> torch.Tensor:
    """``y[i, j] = 1`` when row i and column j show the same identity."""
    return (row_pids.view(-1, 1) == col_pids.view(1, -1)).float()


def _kl_to_matches(logits: torch.Tensor, matches: torch.Tensor, eps: float) -> torch.Tensor:
    """mean_i KL(softmax(logits_i) || matches_i / sum(matches_i))."""
    target = matches / matches.sum(dim=1, keepdim=True)
    prediction = F.softmax(logits, dim=1)
    kl = prediction * (F.log_softmax(logits, dim=1) - torch.log(target + eps))
    return kl.sum(dim=1).mean()


def _global_batch(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, pids, across_ranks: bool):
    if pids is not None:
        pids = torch.as_tensor(pids, device=image_embeddings.device)
    return gather_batch(image_embeddings, text_embeddings, pids, across_ranks=across_ranks)


def cmpm_loss(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, pids: torch.Tensor,
              eps: float = EPS, *, across_ranks: bool = True) -> torch.Tensor:
    """Identity-aware cross-modal projection matching (PLIP's IVLC), both directions.

    ``p_ij = softmax_j(v_i . t_j / |t_j|)`` — each side is projected onto the *normalised* other
    side and no temperature is used; the target spreads evenly over same-identity pairs.
    """
    image_embeddings, text_embeddings, pids = _global_batch(image_embeddings, text_embeddings, pids, across_ranks)
    matches = identity_match_matrix(pids, pids)
    image_unit = F.normalize(image_embeddings, dim=1)
    text_unit = F.normalize(text_embeddings, dim=1)
    image_to_text = image_embeddings @ text_unit.t()
    text_to_image = text_embeddings @ image_unit.t()
    return _kl_to_matches(image_to_text, matches, eps) + _kl_to_matches(text_to_image, matches, eps)


def infonce_loss(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: torch.Tensor | float,
                 pids: torch.Tensor | None = None, *, across_ranks: bool = True) -> torch.Tensor:
    """Symmetric InfoNCE on L2-normalised embeddings with a (learnable) logit scale.

    Without ``pids`` the i-th image and i-th text are the only positives (CLIP). With ``pids``
    (the identity-aware variant used for person data, where a batch holds several views of one
    person) the target is spread over every same-identity pair, so a second image of the same
    person is not pushed away as a negative.
    """
    image_embeddings, text_embeddings, pids = _global_batch(image_embeddings, text_embeddings, pids, across_ranks)
    image_unit = F.normalize(image_embeddings, dim=1)
    text_unit = F.normalize(text_embeddings, dim=1)
    logits = torch.as_tensor(logit_scale, dtype=image_unit.dtype, device=image_unit.device) * image_unit @ text_unit.t()
    if pids is None:
        labels = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    matches = identity_match_matrix(pids, pids)
    target = matches / matches.sum(dim=1, keepdim=True)
    image_to_text = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    text_to_image = -(target * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return (image_to_text + text_to_image) / 2


def sdm_loss(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, pids: torch.Tensor,
             logit_scale: torch.Tensor | float = 50.0, eps: float = EPS, *, across_ranks: bool = True) -> torch.Tensor:
    """Similarity distribution matching: KL between the scaled cosine-similarity softmax and the
    normalised identity-match distribution, image->text plus text->image."""
    image_embeddings, text_embeddings, pids = _global_batch(image_embeddings, text_embeddings, pids, across_ranks)
    image_unit = F.normalize(image_embeddings, dim=1)
    text_unit = F.normalize(text_embeddings, dim=1)
    scale = torch.as_tensor(logit_scale, dtype=image_unit.dtype, device=image_unit.device)
    cosine = image_unit @ text_unit.t()
    matches = identity_match_matrix(pids, pids)
    return _kl_to_matches(scale * cosine, matches, eps) + _kl_to_matches(scale * cosine.t(), matches, eps)


def ranking_loss(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, pids: torch.Tensor,
                 margin: float = 0.2) -> torch.Tensor:
    """Bidirectional triplet ranking on cosine similarity (UniPT / LGUR): each image against its
    hardest non-matching caption and each caption against its hardest non-matching image,
    relative to the least similar matching pair. The hardest negatives are this rank's: the
    loss reads the local batch only."""
    similarity = F.normalize(image_embeddings, dim=1) @ F.normalize(text_embeddings, dim=1).t()
    same = pids.view(-1, 1) == pids.view(1, -1)
    hardest_positive_i2t = similarity.masked_fill(~same, float("inf")).min(dim=1).values
    hardest_negative_i2t = similarity.masked_fill(same, float("-inf")).max(dim=1).values
    hardest_positive_t2i = similarity.masked_fill(~same, float("inf")).min(dim=0).values
    hardest_negative_t2i = similarity.masked_fill(same, float("-inf")).max(dim=0).values
    valid = (~same).any(dim=1)
    if not valid.any():
        return similarity.sum() * 0.0
    image_side = F.relu(margin + hardest_negative_i2t - hardest_positive_i2t)[valid]
    text_side = F.relu(margin + hardest_negative_t2i - hardest_positive_t2i)[valid]
    return image_side.mean() + text_side.mean()
