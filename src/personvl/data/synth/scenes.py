"""Scenes for person search: wide camera frames holding several people, with their boxes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from personvl.data.synth.render import CameraStyle, Pose, apply_camera, background_texture, render_cutout
from personvl.data.synth.shots import sample_pose


@dataclass(frozen=True)
class ScenePerson:
    pid: int                  # world identity, or -2 for an unlabelled passer-by (PRW's code)
    appearance: tuple[tuple[str, str], ...]
    pose: Pose                # pose inside the person's own cut-out canvas
    box: tuple[int, int, int, int]   # x, y, w, h of the cut-out canvas in the frame


@dataclass(frozen=True)
class SceneSpec:
    name: str                 # PRW frame name without extension, e.g. c1s1_000123
    camera: int
    people: tuple[ScenePerson, ...]
    light: float
    noise_seed: int


def layout_people(rng: np.random.Generator, members: list[tuple[int, dict[str, str]]],
                  frame: tuple[int, int]) -> tuple[ScenePerson, ...]:
    """Place people side by side at perspective-consistent sizes (further up = smaller)."""
    width, height = frame
    slots = np.sort(rng.choice(np.arange(len(members) * 2 + 1), size=len(members), replace=False))
    people = []
    for (pid, appearance), slot in zip(members, slots):
        foot = int(height * rng.uniform(0.62, 0.98))
        box_h = int(foot * rng.uniform(0.5, 0.62))
        box_w = max(8, box_h // 2)
        x = int((slot + 0.5) / (len(members) * 2 + 1) * width - box_w / 2 + rng.uniform(-0.03, 0.03) * width)
        x = int(np.clip(x, 0, width - box_w))
        y = max(0, foot - box_h)
        view = ("front", "back", "side")[int(rng.integers(3))]
        pose = sample_pose(rng, box_w, box_h, view)
        people.append(ScenePerson(pid, tuple(appearance.items()), pose, (x, y, box_w, box_h)))
    return tuple(people)


def _tight_box(person: ScenePerson) -> tuple[Image.Image, Image.Image, tuple[int, int, int, int] | None]:
    x, y, w, h = person.box
    cutout, mask = render_cutout(dict(person.appearance), person.pose, (w, h))
    pixels = np.asarray(mask)
    cols = np.flatnonzero(pixels.any(axis=0))
    rows = np.flatnonzero(pixels.any(axis=1))
    if len(cols) == 0:
        return cutout, mask, None
    return cutout, mask, (x + int(cols[0]), y + int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


def scene_boxes(spec: SceneSpec) -> list[tuple[int, int, int, int, int]]:
    """The tight box ``(pid, x, y, w, h)`` of every person drawn in the frame."""
    boxes = []
    for person in spec.people:
        box = _tight_box(person)[2]
        if box is not None:
            boxes.append((person.pid, *box))
    return boxes


def render_scene(spec: SceneSpec, style: CameraStyle, frame: tuple[int, int]) -> Image.Image:
    width, height = frame
    texture = background_texture(style.background_seed, width * 3, int(height * 1.5))
    canvas = Image.fromarray(np.ascontiguousarray(texture[:height, :width]), "RGB")
    for person in spec.people:
        cutout, mask, _ = _tight_box(person)
        canvas.paste(cutout, person.box[:2], mask.point(lambda v: 255 if v else 0))
    return apply_camera(canvas, style, spec.light, 1.0, spec.noise_seed)
