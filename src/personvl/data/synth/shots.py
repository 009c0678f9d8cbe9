"""Sampling the shots of the world: which camera sees whom, from where, how occluded."""

from __future__ import annotations

import math

import numpy as np

from personvl.data.synth import vocabulary as vocab
from personvl.data.synth.render import Occluder, Pose, ShotSpec

_VIEW_P = (0.4, 0.3, 0.3)


def sample_pose(rng: np.random.Generator, width: int, height: int, view: str) -> Pose:
    figure = height * rng.uniform(0.74, 0.95)
    foot_y = height - rng.uniform(0.01, 0.06) * height
    return Pose(
        height=float(figure),
        centre_x=float(width / 2 + rng.uniform(-0.09, 0.09) * width),
        foot_y=float(foot_y),
        lean=float(rng.normal(0.0, 0.035)),
        phase=float(rng.uniform(0, 2 * math.pi)),
        facing=1 if rng.random() < 0.5 else -1,
        view=view,
    )


def sample_occluder(rng: np.random.Generator, width: int, height: int, rate: float) -> Occluder | None:
    if rng.random() >= rate:
        return None
    colour = tuple(int(v) for v in rng.integers(20, 236, size=3))
    if rng.random() < 0.7:
        # something in front of the lower body: a bench, a car bonnet, a railing
        top = int(height * rng.uniform(0.62, 0.9))
        return Occluder((0, top, width, height), colour)
    x = int(rng.integers(0, width - 8))
    return Occluder((x, 0, x + int(rng.integers(8, 24)), height), colour)


def hidden_parts(pose: Pose, occluder: Occluder | None) -> tuple[bool, bool]:
    """(feet hidden, legs hidden) by a band in front of the lower body."""
    if occluder is None or occluder.box[1] == 0:
        return False, False
    top = occluder.box[1]
    feet_hidden = top < pose.foot_y - 0.02 * pose.height
    legs_hidden = top < pose.foot_y - 0.36 * pose.height
    return feet_hidden, legs_hidden


def identity_cameras(rng: np.random.Generator, images: int, cameras: int) -> list[int]:
    """Cameras of an identity's images: as many different cameras as possible, so that the
    same person is always seen by at least two cameras."""
    order = [int(c) for c in rng.permutation(cameras)]
    return [order[k % cameras] for k in range(images)]


def sample_shot(
    rng: np.random.Generator, appearance: dict[str, str], camera: int, width: int, height: int,
    occlusion_rate: float, low_resolution_rate: float,
) -> ShotSpec:
    view = vocab.VIEWS[int(rng.choice(3, p=_VIEW_P))]
    pose = sample_pose(rng, width, height, view)
    occluder = sample_occluder(rng, width, height, occlusion_rate)
    downscale = float(rng.uniform(1.6, 3.2)) if rng.random() < low_resolution_rate else 1.0
    return ShotSpec(
        appearance=tuple(appearance.items()),
        pose=pose,
        camera=camera,
        occluder=occluder,
        downscale=downscale,
        light=float(rng.uniform(0.8, 1.15)),
        background_offset=(int(rng.integers(0, 2 * width)), int(rng.integers(0, height // 2))),
        noise_seed=int(rng.integers(2**31)),
    )
