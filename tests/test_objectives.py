import math

import pytest
import torch
from torch import nn

from personvl.objectives import (
    FeatureQueue, attribute_bce_loss, batch_hard_triplet_loss, cmpm_loss, colorization_loss, id_loss, infonce_loss,
    masked_token_loss, masking_ratio_schedule, momentum_contrast_loss, momentum_update, positive_ratio_weights,
    random_token_mask, sdm_loss, to_grayscale, whole_word_mask,
)
from personvl.objectives.masking import IGNORE_INDEX

EPS = 1e-8


def _kl_row(logits, target):
    """KL(softmax(logits) || target) for one row, written out term by term."""
    z = sum(math.exp(v) for v in logits)
    p = [math.exp(v) / z for v in logits]
    return sum(pi * (math.log(pi) - math.log(ti + EPS)) for pi, ti in zip(p, target))


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _unit(a):
    norm = math.sqrt(_dot(a, a))
    return [x / norm for x in a]


def _log_softmax(row):
    z = math.log(sum(math.exp(v) for v in row))
    return [v - z for v in row]


def _targets(pids):
    """Row i: 1/n_i on the n_i samples sharing i's identity, 0 elsewhere."""
    return [[(p == q) / sum(p == r for r in pids) for q in pids] for p in pids]


def _transpose(matrix):
    return [list(column) for column in zip(*matrix)]


# Distinct embeddings with unequal norms (within and across the two sides), not orthogonal, and
# identities that repeat: identity 7 has three samples, identity 2 two, identity 5 one.
IMAGES = [[1.0, 0.2, 0.0], [0.3, 2.0, 0.5], [0.0, 0.4, 3.0], [1.5, -0.5, 0.2], [-0.2, 0.8, 0.9], [0.6, 0.6, -1.2]]
TEXTS = [[2.0, 0.1, 0.3], [0.2, 0.9, -0.4], [0.5, 0.1, 1.0], [0.7, -1.4, 0.0], [0.1, 2.5, 0.6], [1.0, 0.3, -0.5]]
PIDS = [7, 2, 7, 5, 2, 7]


def test_cmpm_projects_onto_the_normalised_other_side_without_temperature():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    pids = torch.tensor([5, 9])
    # image->text: v . t/|t| = identity; text->image: t . v/|v| = 2 * identity
    expected = _kl_row([1, 0], [1, 0]) + _kl_row([2, 0], [1, 0])
    assert cmpm_loss(images, texts, pids).item() == pytest.approx(expected, rel=1e-5)


def test_cmpm_spreads_the_target_over_same_identity_pairs():
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    texts = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # same identity: the target is (1/2, 1/2) and the prediction too -> zero loss
    assert cmpm_loss(images, texts, torch.tensor([3, 3])).item() == pytest.approx(0.0, abs=1e-6)
    # different identities with identical embeddings: prediction (1/2, 1/2) vs target (1, 0)
    assert cmpm_loss(images, texts, torch.tensor([3, 4])).item() == pytest.approx(2 * _kl_row([1, 1], [1, 0]), rel=1e-5)


def test_infonce_hand_values_and_identity_variant():
    images = torch.tensor([[3.0, 0.0], [0.0, 0.5]])   # normalised inside
    texts = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert infonce_loss(images, texts, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    scale = torch.tensor(10.0, requires_grad=True)
    loss = infonce_loss(images, texts, scale)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-10)), rel=1e-3)  # float32 near zero
    assert scale.grad is not None and scale.grad.item() < 0   # a larger scale lowers this loss
    same = infonce_loss(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]), 1.0,
                        pids=torch.tensor([1, 1]))
    assert same.item() == pytest.approx(math.log(2), rel=1e-6)  # target (1/2, 1/2), prediction (1/2, 1/2)


def test_cmpm_hand_value_with_unequal_norms_and_repeated_identities():
    # p_ij = softmax_j(v_i . t_j / |t_j|): the projected side keeps its norm, the other is unit.
    image_to_text = [[_dot(v, _unit(t)) for t in TEXTS] for v in IMAGES]
    text_to_image = [[_dot(t, _unit(v)) for v in IMAGES] for t in TEXTS]
    targets = _targets(PIDS)
    expected = (sum(_kl_row(row, q) for row, q in zip(image_to_text, targets)) / len(PIDS)
                + sum(_kl_row(row, q) for row, q in zip(text_to_image, targets)) / len(PIDS))
    loss = cmpm_loss(torch.tensor(IMAGES), torch.tensor(TEXTS), torch.tensor(PIDS))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_identity_aware_infonce_hand_value_with_several_positives():
    scale = 3.0
    logits = [[scale * _dot(_unit(v), _unit(t)) for t in TEXTS] for v in IMAGES]
    targets = _targets(PIDS)

    def cross_entropy(rows):
        return -sum(_dot(q, _log_softmax(row)) for row, q in zip(rows, targets)) / len(PIDS)

    expected = (cross_entropy(logits) + cross_entropy(_transpose(logits))) / 2
    loss = infonce_loss(torch.tensor(IMAGES), torch.tensor(TEXTS), torch.tensor(scale), torch.tensor(PIDS))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # Without identities only the diagonal is positive: another value on these inputs.
    diagonal = [[float(i == j) for j in range(len(PIDS))] for i in range(len(PIDS))]
    plain = -sum(_dot(q, _log_softmax(row)) for row, q in zip(logits, diagonal)) / len(PIDS)
    plain += -sum(_dot(q, _log_softmax(row)) for row, q in zip(_transpose(logits), diagonal)) / len(PIDS)
    assert infonce_loss(torch.tensor(IMAGES), torch.tensor(TEXTS), scale).item() == pytest.approx(plain / 2, rel=1e-5)
    assert abs(expected - plain / 2) > 0.1


def test_sdm_hand_value_with_repeated_identities():
    scale = 4.0
    cosine = [[_dot(_unit(v), _unit(t)) for t in TEXTS] for v in IMAGES]
    targets = _targets(PIDS)
    expected = (sum(_kl_row([scale * c for c in row], q) for row, q in zip(cosine, targets))
                + sum(_kl_row([scale * c for c in row], q) for row, q in zip(_transpose(cosine), targets))) / len(PIDS)
    loss = sdm_loss(torch.tensor(IMAGES), torch.tensor(TEXTS), torch.tensor(PIDS), logit_scale=scale)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_sdm_is_kl_of_scaled_cosine_softmax_both_ways():
    images = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    texts = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    pids = torch.tensor([0, 1])
    cos = [[1.0, 0.0], [0.6, 0.8]]
    scale = 5.0
    i2t = sum(_kl_row([scale * c for c in row], t) for row, t in zip(cos, [[1, 0], [0, 1]])) / 2
    t2i_rows = [[cos[0][0], cos[1][0]], [cos[0][1], cos[1][1]]]
    t2i = sum(_kl_row([scale * c for c in row], t) for row, t in zip(t2i_rows, [[1, 0], [0, 1]])) / 2
    assert sdm_loss(images, texts, pids, logit_scale=scale).item() == pytest.approx(i2t + t2i, rel=1e-5)


def test_batch_hard_triplet_on_a_line():
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    pids = torch.tensor([0, 0, 1, 1])
    # only anchor 3.0 violates: hardest positive 4 (to 7), hardest negative 2 (to 1) -> 4 - 2 + 0.5
    assert batch_hard_triplet_loss(points, pids, margin=0.5).item() == pytest.approx(2.5 / 4, rel=1e-5)
    lonely = batch_hard_triplet_loss(points[:2], torch.tensor([0, 1]))
    assert lonely.item() == 0.0


def test_batch_hard_triplet_takes_the_farthest_of_several_positives():
    points = [[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [2.0, 2.0], [4.0, 0.5], [3.0, 3.0]]
    pids = [1, 1, 1, 2, 2, 3]
    margin = 0.7

    def distance(a, b):
        return math.dist(points[a], points[b])

    terms = []
    for a in range(len(points)):
        positives = [distance(a, p) for p in range(len(points)) if p != a and pids[p] == pids[a]]
        negatives = [distance(a, n) for n in range(len(points)) if pids[n] != pids[a]]
        if positives and negatives:
            terms.append(max(0.0, max(positives) - min(negatives) + margin))
    expected = sum(terms) / len(terms)    # anchor 5 has no positive and is left out
    loss = batch_hard_triplet_loss(torch.tensor(points), torch.tensor(pids), margin=margin)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # The easiest positive would give another value here: anchors 0-2 have two positives each.
    easiest = [max(0.0, min(distance(a, p) for p in range(3) if p != a)
                   - min(distance(a, n) for n in range(3, 6)) + margin) for a in range(3)]
    assert sum(easiest) != pytest.approx(sum(terms[:3]), abs=0.1)


def test_id_loss_with_label_smoothing():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    assert id_loss(logits, torch.tensor([2]), label_smoothing=0.1).item() == pytest.approx(math.log(4), rel=1e-6)
    logits = torch.tensor([[2.0, 0.0]])
    log_p = [2 - math.log(math.exp(2) + 1), -math.log(math.exp(2) + 1)]
    expected = -(0.95 * log_p[0] + 0.05 * log_p[1])
    assert id_loss(logits, torch.tensor([0]), label_smoothing=0.1).item() == pytest.approx(expected, rel=1e-6)


def test_attribute_bce_weights_rare_positives_more():
    labels = torch.tensor([[1.0, 0.0]])
    weights = positive_ratio_weights(labels, torch.tensor([0.25, 0.5]))
    assert weights[0].tolist() == pytest.approx([math.exp(0.75), math.exp(0.5)])
    logits = torch.tensor([[0.0, 0.0]])
    plain = attribute_bce_loss(logits, labels)
    assert plain.item() == pytest.approx(math.log(2), rel=1e-6)
    weighted = attribute_bce_loss(logits, labels, torch.tensor([0.25, 0.5]))
    assert weighted.item() == pytest.approx(math.log(2) * (math.exp(0.75) + math.exp(0.5)) / 2, rel=1e-6)


def test_colorization_grayscale_and_loss():
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    gray = to_grayscale(red)
    assert torch.allclose(gray, torch.full_like(gray, 0.299))
    mean, std = torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25])
    normalised = (red - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(to_grayscale(normalised, mean, std), (gray - 0.5) / 0.25, atol=1e-6)
    target = torch.zeros(1, 3, 4, 4)
    predicted = torch.ones(1, 3, 2, 2)    # upsampled to the target size first
    assert colorization_loss(predicted, target).item() == pytest.approx(1.0)


def test_masking_ratio_follows_a_square_root_curriculum():
    assert masking_ratio_schedule(0.0) == pytest.approx(0.2)
    assert masking_ratio_schedule(0.25) == pytest.approx(0.5)
    assert masking_ratio_schedule(1.0) == pytest.approx(0.8)
    assert masking_ratio_schedule(7.0) == pytest.approx(0.8)


def test_whole_word_masking_masks_every_piece_of_a_chosen_word():
    ids = torch.tensor([[101, 7, 8, 9, 102, 0]])
    word_ids = [[None, 0, 0, 1, None, None]]
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        masked, labels = whole_word_mask(ids, word_ids, 0.5, mask_token_id=103, generator=generator)
        positions = (labels != IGNORE_INDEX).nonzero()[:, 1].tolist()
        assert positions in ([1, 2], [3])
        assert masked[0, positions].tolist() == [103] * len(positions)
        assert labels[0, positions].tolist() == ids[0, positions].tolist()
        assert masked[0, [0, 4, 5]].tolist() == [101, 102, 0]
    only_attribute, labels = whole_word_mask(ids, word_ids, 0.1, 103, candidate_words=[[1]])
    assert (labels != IGNORE_INDEX).nonzero()[:, 1].tolist() == [3]


def test_whole_word_masking_masks_phrases_together():
    ids = torch.tensor([[101, 20, 21, 22, 23, 24, 25, 102]])
    word_ids = [[None, 0, 1, 1, 2, 3, 4, None]]          # word 1 has two pieces
    phrases = [[(0, 1), (3, 4)]]                           # two phrases of two words each
    seen = set()
    for seed in range(20):
        masked, labels = whole_word_mask(ids, word_ids, 0.2, 103, torch.Generator().manual_seed(seed),
                                         candidate_words=phrases)
        positions = tuple((labels != IGNORE_INDEX).nonzero()[:, 1].tolist())
        assert positions in ((1, 2, 3), (5, 6))        # one phrase, every piece of every word of it
        assert (masked[0, list(positions)] == 103).all() and labels[0, list(positions)].equal(ids[0, list(positions)])
        seen.add(positions)
    assert len(seen) == 2
    _, labels = whole_word_mask(ids, word_ids, 0.8, 103, candidate_words=phrases)
    assert (labels != IGNORE_INDEX).nonzero()[:, 1].tolist() == [1, 2, 3, 5, 6]


def test_whole_word_masking_follows_berts_80_10_10_split_per_word():
    rows, words = 200, 30
    ids = torch.arange(1000, 1000 + rows * 2 * words).reshape(rows, 2 * words)
    word_ids = [[t // 2 for t in range(2 * words)] for _ in range(rows)]   # two pieces a word
    replacements = torch.tensor([7, 8, 9])
    masked, labels = whole_word_mask(ids, word_ids, 0.5, 103, torch.Generator().manual_seed(0),
                                     replacement_ids=replacements)
    chosen = labels != IGNORE_INDEX
    assert chosen.sum().item() == rows * 2 * 15                       # half of the words, both pieces
    assert chosen[:, 0::2].equal(chosen[:, 1::2])
    pieces = masked.reshape(rows, words, 2)
    word_chosen = chosen[:, 0::2]
    as_mask = (pieces == 103).all(-1) & word_chosen
    as_replacement = torch.isin(pieces, replacements).all(-1) & word_chosen
    kept = (pieces == ids.reshape(rows, words, 2)).all(-1) & word_chosen
    assert (as_mask | as_replacement | kept).equal(word_chosen)         # a word is treated as one
    shares = [part.sum().item() / word_chosen.sum().item() for part in (as_mask, as_replacement, kept)]
    assert shares == pytest.approx([0.8, 0.1, 0.1], abs=0.025)        # 3,000 chosen words
    assert masked[~chosen].equal(ids[~chosen])
    plain, plain_labels = whole_word_mask(ids, word_ids, 0.5, 103, torch.Generator().manual_seed(0))
    plain_chosen = plain_labels != IGNORE_INDEX
    assert (plain[plain_chosen] == 103).all() and plain_chosen.sum() == chosen.sum()   # without replacements: [MASK]


def test_random_token_masking_follows_berts_80_10_10_split_on_maskable_tokens_only():
    ids = torch.arange(1000, 1000 + 40 * 50).reshape(40, 50)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -5:] = False                       # start marker and padding
    replacements = torch.tensor([7, 8])
    masked, labels = random_token_mask(ids, maskable, 0.5, 103, replacements, torch.Generator().manual_seed(0))
    chosen = labels != IGNORE_INDEX
    assert not chosen[~maskable].any() and (masked[~maskable] == ids[~maskable]).all()
    assert (labels[chosen] == ids[chosen]).all()
    assert abs(chosen.sum().item() / maskable.sum().item() - 0.5) < 0.05
    as_mask = (masked == 103) & chosen
    as_replacement = torch.isin(masked, replacements) & chosen
    kept = (masked == ids) & chosen
    assert (as_mask | as_replacement | kept).equal(chosen)
    shares = [part.sum().item() / chosen.sum().item() for part in (as_mask, as_replacement, kept)]
    assert shares == pytest.approx([0.8, 0.1, 0.1], abs=0.03)
    assert (masked[~chosen] == ids[~chosen]).all()
    again, _ = random_token_mask(ids, maskable, 0.5, 103, replacements, torch.Generator().manual_seed(0))
    assert again.equal(masked)


def test_masked_token_loss_ignores_unmasked_positions():
    logits = torch.zeros(1, 3, 4)
    logits[0, 1, 2] = 5.0
    labels = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX]])
    expected = -(5.0 - math.log(math.exp(5.0) + 3))
    assert masked_token_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert masked_token_loss(logits, torch.full((1, 3), IGNORE_INDEX)).item() == 0.0


def test_momentum_update_and_queue():
    online, key = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        online.weight.fill_(1.0)
        key.weight.fill_(0.0)
    momentum_update(online, key, momentum=0.9)
    assert key.weight.item() == pytest.approx(0.1)
    queue = FeatureQueue(size=3, dim=2)
    queue.push(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    queue.push(torch.tensor([[1.0, 1.0], [0.0, -1.0]]))     # wraps around
    assert queue.keys[0].tolist() == pytest.approx([0.0, -1.0])
    assert queue.keys[2].tolist() == pytest.approx([2 ** -0.5, 2 ** -0.5])
    assert int(queue.pointer) == 1


def test_momentum_contrast_loss_hand_value():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0]])
    assert momentum_contrast_loss(q, k, queue, temperature=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_momentum_contrast_loss_divides_by_the_temperature():
    queries = [[2.0, 0.0], [0.6, 0.8]]
    keys = [[1.0, 1.0], [0.0, 3.0]]                     # normalised inside
    queue = [[0.0, 1.0], [-1.0, 0.0], [0.6, -0.8]]
    temperature = 0.2
    expected = 0.0
    for q, k in zip(queries, keys):
        q, k = _unit(q), _unit(k)
        logits = [_dot(q, k) / temperature] + [_dot(q, n) / temperature for n in queue]
        expected -= _log_softmax(logits)[0]
    expected /= len(queries)
    loss = momentum_contrast_loss(torch.tensor(queries), torch.tensor(keys), torch.tensor(queue), temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
