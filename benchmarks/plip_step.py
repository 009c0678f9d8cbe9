"""What the parts of a PLIP step cost on the quickstart's tiny encoder, forward and backward, on
one batch of the synthetic world's captions, all in the same run:

- the IAP head over the masked word pieces only (what PLIPMethod runs) against the same head
  over every position of every caption (its output at an unmasked position is never scored);
- a whole step with IVLC alone, with all three objectives, with TIC on a quarter of the batch
  (``plip.tic_images``), and with TIC on a quarter of the images and IAP on a quarter of the
  captions (``plip.iap_captions``, the quickstart's step), against the step with all three
  objectives.

Run: python benchmarks/plip_step.py [--steps 20] [--threads 2] [--batch 64] [--text-width 128]
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Callable

import torch


def caption_batch(encoder, size: int, seed: int = 0) -> dict:
    from personvl.data.synth.world import plan_world, resolve_world_config

    records = plan_world(resolve_world_config(identities=size, seed=seed)).records[:size]
    tokens = encoder.tokenizer([r["captions"][0] for r in records])
    height, width = encoder.config.preprocess.input_size
    images = torch.randn(size, 3, height, width, generator=torch.Generator().manual_seed(seed))
    return {"image": images, "pid": torch.tensor([r["pid"] for r in records]),
            "input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}


def seconds_per_call(run: Callable[[], torch.Tensor], calls: int) -> float:
    run().backward()
    started = time.perf_counter()
    for _ in range(calls):
        run().backward()
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--text-width", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from personvl.methods.plip import PLIPConfig, PLIPMethod
    from personvl.methods.text_masking import wordpiece_words
    from personvl.models import TokenBatch, create_model
    from personvl.objectives import masked_token_loss, whole_word_mask
    from personvl.objectives.masking import IGNORE_INDEX
    from personvl.quickstart import QUICKSTART_MODEL, QUICKSTART_MODEL_OPTIONS

    torch.manual_seed(0)
    options = dict(QUICKSTART_MODEL_OPTIONS, text_width=args.text_width)
    encoder = create_model(QUICKSTART_MODEL, **options).train()
    batch = caption_batch(encoder, args.batch)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}; "
          f"{QUICKSTART_MODEL} {options}, batch {args.batch}, {args.steps} timed calls each")

    base = dict(ivlc_loss="infonce", decoder_width=64, text_lr_scale=1.0)
    method = PLIPMethod(encoder, PLIPConfig(**base))
    hf = encoder.tokenizer.hf
    word_ids, words = wordpiece_words(hf, batch["input_ids"])
    masked_ids, labels = whole_word_mask(batch["input_ids"], word_ids, 0.5, hf.mask_token_id,
                                         torch.Generator().manual_seed(0),
                                         candidate_words=[method.attribute_matcher.spans(w) for w in words])
    with torch.no_grad():
        states = encoder.text_features(TokenBatch(masked_ids, batch["attention_mask"])).tokens
        image = encoder.image_features(batch["image"])
    states.requires_grad_(True)
    rows, columns = (labels != IGNORE_INDEX).nonzero(as_tuple=True)

    def every_position() -> torch.Tensor:
        return masked_token_loss(method.iap_head(states, image.embedding, image.maps[-1]), labels)

    def masked_only() -> torch.Tensor:
        logits = method.iap_head(states[rows, columns].unsqueeze(1), image.embedding[rows], image.maps[-1][rows])
        return masked_token_loss(logits, labels[rows, columns].unsqueeze(1))

    assert torch.allclose(every_position(), masked_only(), atol=1e-5)
    full_grid = seconds_per_call(every_position, args.steps)
    masked = seconds_per_call(masked_only, args.steps)
    print(f"IAP head over every position ({labels.numel()}) {full_grid * 1000:7.1f} ms | over the masked ones "
          f"({len(rows)}) {masked * 1000:7.1f} ms | ratio {full_grid / masked:5.2f}")

    variants = {
        "IVLC+TIC+IAP": PLIPConfig(**base),
        "IVLC alone": PLIPConfig(**base, tic_weight=0.0, iap_weight=0.0),
        f"IVLC+TIC+IAP, TIC on {args.batch // 4} images": PLIPConfig(**base, tic_images=args.batch // 4),
        f"IVLC+TIC+IAP, TIC and IAP on {args.batch // 4}": PLIPConfig(**base, tic_images=args.batch // 4,
                                                                     iap_captions=args.batch // 4),
    }
    reference = None
    for name, config in variants.items():
        step_method = PLIPMethod(encoder, config)
        seconds = seconds_per_call(lambda: step_method(batch, progress=0.5, step=0)["loss"], args.steps)
        reference = reference or seconds
        print(f"step, {name:38s} {seconds * 1000:7.1f} ms | all three / this {reference / seconds:5.2f}")


if __name__ == "__main__":
    main()
