import pytest
import torch

from personvl.models.heads import ColorizationDecoder, CrossModalTokenPredictor, MaskedTokenPredictor


def test_colorization_decoder_restores_the_input_resolution_and_uses_the_text():
    torch.manual_seed(0)
    maps = [torch.randn(2, c, 64 // s, 32 // s) for c, s in ((8, 4), (16, 8), (32, 16), (64, 32))]
    decoder = ColorizationDecoder([8, 16, 32, 64], text_dim=12, width=32, gate_hidden=16)
    text = torch.randn(2, 12, requires_grad=True)
    out = decoder(maps, text)
    assert out.shape == (2, 3, 64, 32)
    out.square().mean().backward()
    assert text.grad is not None and text.grad.abs().sum() > 0
    other = decoder(maps, torch.randn(2, 12))
    assert not torch.allclose(out, other)   # the caption gates the channels


@pytest.mark.parametrize("predictor", [MaskedTokenPredictor, CrossModalTokenPredictor])
def test_masked_token_predictor_attends_to_the_image(predictor):
    torch.manual_seed(0)
    head = predictor(text_dim=16, vocab_size=50, image_dim=24, map_channels=10, heads=4)
    states = torch.randn(3, 7, 16)
    image = torch.randn(3, 24)
    last_map = torch.randn(3, 10, 4, 2)
    logits = head(states, image, last_map)
    assert logits.shape == (3, 7, 50)
    assert not torch.allclose(logits, head(states, torch.randn(3, 24), last_map))
    plain = predictor(text_dim=16, vocab_size=50)
    assert plain(states).shape == (3, 7, 50)


@pytest.mark.parametrize("predictor", [MaskedTokenPredictor, CrossModalTokenPredictor])
def test_masked_token_predictor_attends_over_every_token_of_the_map(predictor):
    torch.manual_seed(0)
    head = predictor(text_dim=16, vocab_size=50, image_dim=24, map_channels=10, heads=4).eval()
    states, image = torch.randn(2, 5, 16), torch.randn(2, 24)
    last_map = torch.randn(2, 10, 3, 2)
    base = head(states, image, last_map)
    for row in range(3):
        for column in range(2):       # each of the six tokens on its own changes the prediction
            changed = last_map.clone()
            changed[:, :, row, column] += 3.0
            assert not torch.allclose(head(states, image, changed), base, atol=1e-4)
    # Two maps with the same mean token but other tokens: a head that pooled the map would not
    # tell them apart.
    swapped = last_map.clone()
    swapped[:, 0, 0, 0], swapped[:, 0, 2, 1] = last_map[:, 0, 2, 1], last_map[:, 0, 0, 0]
    assert torch.allclose(swapped.mean(dim=(2, 3)), last_map.mean(dim=(2, 3)))
    assert not torch.allclose(head(states, image, swapped), base, atol=1e-4)


def _relation_inputs(batch=2, length=6, text_dim=16, image_dim=24, channels=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, length, text_dim, generator=generator),
            torch.randn(batch, image_dim, generator=generator),
            torch.randn(batch, channels, 3, 2, generator=generator))


def test_relation_head_fuses_at_its_own_width_and_predicts_every_position():
    torch.manual_seed(0)
    head = CrossModalTokenPredictor(text_dim=16, vocab_size=50, image_dim=24, map_channels=10, width=32)
    assert len(head.blocks) == 4                       # IRRA's depth by default
    assert head.cross_attention.embed_dim == 32 and head.blocks[0].self_attn.embed_dim == 32
    states, image, last_map = _relation_inputs()
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    assert head(states, image, last_map, attention_mask=mask).shape == (2, 6, 50)
    assert head(states, image, last_map).shape == (2, 6, 50)
    # IRRA's heads are 64 wide.
    assert CrossModalTokenPredictor(16, 50, 24, 10, width=128).blocks[0].self_attn.num_heads == 2


def test_relation_head_without_layers_is_cross_attention_and_the_mlm_head():
    torch.manual_seed(0)
    head = CrossModalTokenPredictor(text_dim=16, vocab_size=50, image_dim=24, map_channels=10, heads=4,
                                layers=0).eval()
    assert len(head.blocks) == 0
    states, image, last_map = _relation_inputs()
    image_tokens = torch.cat([head.image_proj(image).unsqueeze(1),
                              head.map_proj(last_map.flatten(2).transpose(1, 2))], dim=1)
    image_tokens = head.image_norm(image_tokens)
    fused, _ = head.cross_attention(head.text_norm(states), image_tokens, image_tokens)
    expected = head.vocabulary(head.transform(head.norm(fused)))
    assert torch.allclose(head(states, image, last_map), expected, atol=1e-6)
    # Each position is predicted from its own state and the image only.
    changed = states.clone()
    changed[:, 2] = torch.randn(2, 16)
    moved = (head(changed, image, last_map) - expected).abs().amax(dim=(0, 2))
    assert moved[2] > 1e-3 and torch.all(moved[[0, 1, 3, 4, 5]] < 1e-6)


def test_relation_head_reads_the_image():
    torch.manual_seed(0)
    head = CrossModalTokenPredictor(text_dim=16, vocab_size=50, image_dim=24, map_channels=10, heads=4,
                                layers=2).eval()
    states, image, last_map = _relation_inputs()
    base = head(states, image, last_map)
    assert not torch.allclose(head(states, image, last_map + torch.randn_like(last_map)), base, atol=1e-4)
    assert not torch.allclose(head(states, image + torch.randn_like(image), last_map), base, atol=1e-4)


def test_relation_head_ignores_padded_text_positions_given_the_mask():
    torch.manual_seed(0)
    head = CrossModalTokenPredictor(text_dim=16, vocab_size=50, image_dim=24, map_channels=10, heads=4,
                                layers=2).eval()
    states, image, last_map = _relation_inputs()
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    other_padding = torch.where(mask.bool().unsqueeze(-1), states, torch.randn_like(states) * 5)
    real = mask.bool()
    base = head(states, image, last_map, attention_mask=mask)
    assert torch.allclose(head(other_padding, image, last_map, attention_mask=mask)[real], base[real], atol=1e-5)
    # Without the mask the padding is read: the comparison above can tell.
    assert not torch.allclose(head(other_padding, image, last_map)[real], head(states, image, last_map)[real],
                              atol=1e-4)


def test_each_relation_layer_is_one_transformer_block_at_the_common_width():
    def size(layers):
        head = CrossModalTokenPredictor(text_dim=16, vocab_size=50, image_dim=24, map_channels=10, heads=4,
                                    layers=layers, width=32)
        return sum(p.numel() for p in head.parameters())

    width = 32
    # Self-attention (4 w x w + 4 w), MLP w -> 4w -> w (8 w^2 + 5 w) and two layer norms (4 w).
    block = 12 * width * width + 13 * width
    assert [size(n + 1) - size(n) for n in range(3)] == [block] * 3


def test_relation_head_passes_gradient_to_the_image_map_and_the_text():
    torch.manual_seed(0)
    head = CrossModalTokenPredictor(text_dim=16, vocab_size=50, image_dim=24, map_channels=10, heads=4, layers=2)
    states, image, last_map = _relation_inputs()
    states.requires_grad_(True)
    last_map.requires_grad_(True)
    head(states, image, last_map).logsumexp(-1).mean().backward()
    assert last_map.grad is not None and last_map.grad.abs().sum() > 0
    assert states.grad is not None and states.grad.abs().sum() > 0


def test_relation_head_is_initialised_like_irra():
    torch.manual_seed(0)
    width, layers = 256, 4
    head = CrossModalTokenPredictor(text_dim=width, vocab_size=300, image_dim=24, map_channels=10, layers=layers)
    attention_std, hidden_std = width ** -0.5, (2 * width) ** -0.5
    residual_std = attention_std * (2 * layers) ** -0.5
    expected = {"blocks.0.self_attn.in_proj_weight": attention_std,
                "blocks.3.self_attn.out_proj.weight": residual_std,
                "blocks.1.linear1.weight": hidden_std,
                "blocks.2.linear2.weight": residual_std,
                "cross_attention.in_proj_weight": attention_std,
                "cross_attention.out_proj.weight": residual_std,
                "transform.0.weight": hidden_std,
                "vocabulary.weight": residual_std}
    parameters = dict(head.named_parameters())
    for name, std in expected.items():
        assert abs(parameters[name].std().item() / std - 1) < 0.05, name
