"""Image encoding throughput of personvl's encoders against the same architecture called
directly through open_clip, with the same weights, in the same run; then the effect of the
usual inference options on personvl's encoders.

Run: python benchmarks/models_throughput.py [--batch-size 4] [--iterations 6]
                                           [--compare-iterations 12] [--device cpu] [--threads N]
                                           [--no-compile]
Candidates are timed one batch at a time in turns (A B C, then C B A, ...) and each figure is
the fastest of its turns: other processes only ever slow a batch down, so the minimum
is the least disturbed estimate, and alternating spreads their load over all candidates alike.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from typing import Callable

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from torch import nn

from personvl.models import create_model


def open_clip_plip_rn50() -> nn.Module:
    """PLIP's image encoder from open_clip's module: 8 heads, 768-d, [33, 2048] positions."""
    tower = ModifiedResNet(layers=[3, 4, 6, 3], output_dim=768, heads=8, image_size=256, width=64)
    tower.attnpool.positional_embedding = nn.Parameter(torch.zeros(33, 2048))
    return tower


def open_clip_vitb16_reid() -> nn.Module:
    return VisionTransformer(image_size=(384, 128), patch_size=16, width=768, layers=12, heads=12, mlp_ratio=4.0,
                             output_dim=512)


def seconds_per_batch(candidates: dict[str, Callable[[], object]], iterations: int,
                      device: str) -> dict[str, tuple[float, float]]:
    """Fastest wall time and fastest process CPU time of one call of each candidate, called in
    alternating turns. CPU time leaves out the time spent waiting for a core another process
    holds, which makes it the steadier measure of work on a shared machine."""
    def timed(call):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - wall, time.process_time() - cpu

    for call in candidates.values():
        timed(call)   # warm-up: kernel selection, allocations
    times = {label: [] for label in candidates}
    order = list(candidates)
    for turn in range(iterations):
        for label in (order if turn % 2 == 0 else order[::-1]):
            times[label].append(timed(candidates[label]))
    return {label: (min(w for w, _ in values), min(c for _, c in values)) for label, values in times.items()}


def compare_with_open_clip(name: str, reference: nn.Module, args) -> None:
    model = create_model(name, device=args.device)
    reference.load_state_dict(model.visual.state_dict())
    reference.to(args.device).eval()
    images = torch.randn(args.batch_size, 3, *model.image_transform.size, device=args.device)

    def ours():
        with torch.inference_mode():
            return model.encode_image(images)

    def theirs():
        with torch.inference_mode():
            return F.normalize(reference(images), dim=-1)   # what encode_image returns

    assert torch.allclose(ours(), theirs(), atol=1e-5)
    seconds = seconds_per_batch({"personvl": ours, "open_clip": theirs}, args.compare_iterations, args.device)
    rate = {label: args.batch_size / wall for label, (wall, _) in seconds.items()}
    cpu_ratio = seconds["open_clip"][1] / seconds["personvl"][1]
    size = "x".join(str(v) for v in model.image_transform.size)
    print(f"{name:<17} {size:>8}  personvl {rate['personvl']:7.2f} img/s   open_clip {rate['open_clip']:7.2f} img/s"
          f"   ratio {rate['personvl'] / rate['open_clip']:5.3f} (by CPU time {cpu_ratio:5.3f})", flush=True)


def inference_options(name: str, args) -> None:
    model = create_model(name, device=args.device)
    images = torch.randn(args.batch_size, 3, *model.image_transform.size, device=args.device)
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    images_channels_last = images.contiguous(memory_format=torch.channels_last)
    device_type = torch.device(args.device).type

    def baseline():
        with torch.no_grad():
            return model.encode_image(images)

    def inference_mode():
        with torch.inference_mode():
            return model.encode_image(images)

    def in_channels_last():
        with torch.inference_mode():
            return channels_last.encode_image(images_channels_last)

    def bf16_autocast():
        with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16):
            return model.encode_image(images)

    candidates = {"no_grad (baseline)": baseline, "inference_mode": inference_mode,
                  "channels_last": in_channels_last, "bf16 autocast": bf16_autocast}
    compile_note = ""
    if args.compile:
        try:
            compiled = torch.compile(model.visual)
            started = time.perf_counter()
            with torch.inference_mode():
                compiled(images)
            compile_note = f"  (first call compiles: {time.perf_counter() - started:.0f} s)"

            def with_compile():
                with torch.inference_mode():
                    return F.normalize(compiled(images), dim=-1)

            candidates["torch.compile"] = with_compile
        except Exception as exc:  # compilation needs a working C++ toolchain: report it, do not fail
            print(f"  torch.compile unavailable here: {str(exc).splitlines()[0][:120]}", flush=True)
    seconds = seconds_per_batch(candidates, args.iterations, args.device)
    base_wall, base_cpu = seconds["no_grad (baseline)"]
    print(f"{name}: images/s with each option (x baseline; x baseline by CPU time)", flush=True)
    for label, (wall, cpu) in seconds.items():
        note = compile_note if label == "torch.compile" else ""
        print(f"  {label:<20} {args.batch_size / wall:7.2f}  ({base_wall / wall:4.2f}x; {base_cpu / cpu:4.2f}x){note}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=6, help="turns per option")
    parser.add_argument("--compare-iterations", type=int, default=12, help="turns of personvl vs open_clip")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op CPU threads (default: torch's choice); on a shared machine 1 is steadier")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{os.cpu_count()} CPU cores"
    print(f"machine: {platform.machine()}, {device}, {torch.get_num_threads()} threads, "
          f"Python {platform.python_version()}, torch {torch.__version__}")
    print(f"batch {args.batch_size}, fastest of {args.compare_iterations} (comparison) and {args.iterations} "
          f"(options) alternating turns", flush=True)
    compare_with_open_clip("plip-rn50", open_clip_plip_rn50(), args)
    compare_with_open_clip("clip-vitb16-reid", open_clip_vitb16_reid(), args)
    inference_options("plip-rn50", args)
    inference_options("clip-vitb16-reid", args)


if __name__ == "__main__":
    main()
