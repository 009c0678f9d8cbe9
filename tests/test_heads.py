import torch

from personvl.models.heads import ColorizationDecoder, MaskedTokenPredictor


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


def test_masked_token_predictor_attends_to_the_image():
    torch.manual_seed(0)
    head = MaskedTokenPredictor(text_dim=16, vocab_size=50, image_dim=24, map_channels=10, heads=4)
    states = torch.randn(3, 7, 16)
    image = torch.randn(3, 24)
    last_map = torch.randn(3, 10, 4, 2)
    logits = head(states, image, last_map)
    assert logits.shape == (3, 7, 50)
    assert not torch.allclose(logits, head(states, torch.randn(3, 24), last_map))
    plain = MaskedTokenPredictor(text_dim=16, vocab_size=50)
    assert plain(states).shape == (3, 7, 50)


def test_masked_token_predictor_attends_over_every_token_of_the_map():
    torch.manual_seed(0)
    head = MaskedTokenPredictor(text_dim=16, vocab_size=50, image_dim=24, map_channels=10, heads=4).eval()
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
