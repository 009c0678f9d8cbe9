"""Drawing people: articulated figures with exact part masks, seen through distinct cameras.

A figure is a list of polygons in a body frame (origin between the feet, y pointing down),
each with a part label and a fill. Pose (scale, shift, lean, walking phase, facing) is a
transform of that frame; the same polygons are drawn into the RGB image and the label mask,
so the mask is exact with respect to the drawing. Camera effects (colour cast, illumination,
blur, resolution, noise) act on pixels only, after the mask is fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from personvl.data.synth import vocabulary as vocab
from personvl.data.synth.vocabulary import LABEL

_BUILD_WIDTH = {"slim": 0.86, "average": 1.0, "heavy": 1.22}
_GLASSES_RGB = (20, 20, 24)
_PHONE_RGB = (35, 35, 45)


@dataclass(frozen=True)
class Pose:
    height: float          # figure height in pixels, head top to soles
    centre_x: float        # pixel column of the feet
    foot_y: float          # pixel row of the soles
    lean: float            # radians, rotation about the feet
    phase: float           # walking phase, radians
    facing: int            # +1 facing image right, -1 left (side view only)
    view: str              # front | back | side


@dataclass(frozen=True)
class CameraStyle:
    """How one camera renders colour and detail; strongly different between cameras."""

    colour_matrix: tuple[tuple[float, float, float], ...]
    offset: tuple[float, float, float]
    gamma: float
    blur: float
    noise: float
    background_seed: int


@dataclass(frozen=True)
class Occluder:
    box: tuple[int, int, int, int]   # x1, y1, x2, y2 in pixels
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class ShotSpec:
    """Everything needed to render one crop deterministically."""

    appearance: tuple[tuple[str, str], ...]
    pose: Pose
    camera: int
    occluder: Occluder | None
    downscale: float       # > 1 renders a low-resolution camera
    light: float           # per-shot brightness factor
    background_offset: tuple[int, int]
    noise_seed: int


@dataclass
class Shape:
    label: int
    fill: tuple[int, int, int]
    polygon: np.ndarray    # (N, 2) in the body frame
    pattern: str = "plain"


def camera_style(world_seed: int, camera: int, strength: float) -> CameraStyle:
    """The look of camera ``camera``: a colour cast, tone curve, blur and sensor noise."""
    rng = np.random.default_rng([world_seed, 7919, camera])
    gains = 1.0 + strength * rng.uniform(-0.32, 0.32, size=3)
    mixing = strength * rng.uniform(-0.14, 0.14, size=(3, 3))
    np.fill_diagonal(mixing, 0.0)
    matrix = np.diag(gains) + mixing
    offset = strength * rng.uniform(-0.08, 0.08, size=3)
    return CameraStyle(
        colour_matrix=tuple(tuple(float(v) for v in row) for row in matrix),
        offset=tuple(float(v) for v in offset),
        gamma=float(np.exp(strength * rng.uniform(-0.35, 0.35))),
        blur=float(rng.uniform(0.0, 1.1)),
        noise=float(rng.uniform(2.0, 9.0)),
        background_seed=int(rng.integers(2**31)),
    )


# ----------------------------------------------------------------------------- geometry


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float = 0.0,
             stop: float = 2 * math.pi, points: int = 18) -> np.ndarray:
    t = np.linspace(start, stop, points, endpoint=stop - start < 2 * math.pi - 1e-6)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _limb(x0: float, y0: float, angle: float, length: float, width: float,
          start: float = 0.0, stop: float = 1.0) -> np.ndarray:
    """Quad along a limb hanging at ``angle`` (0 = straight down), from ``start`` to ``stop``."""
    dx, dy = math.sin(angle), math.cos(angle)
    nx, ny = dy * width / 2, -dx * width / 2
    ax, ay = x0 + dx * length * start, y0 + dy * length * start
    bx, by = x0 + dx * length * stop, y0 + dy * length * stop
    return np.array([[ax + nx, ay + ny], [bx + nx, by + ny], [bx - nx, by - ny], [ax - nx, ay - ny]])


def _limb_end(x0: float, y0: float, angle: float, length: float) -> tuple[float, float]:
    return x0 + math.sin(angle) * length, y0 + math.cos(angle) * length


def _quad(*points: tuple[float, float]) -> np.ndarray:
    return np.array(points, dtype=float)


def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """``rgb`` darkened (factor < 1) or lightened towards white (factor > 1)."""
    if factor <= 1:
        return tuple(int(round(c * factor)) for c in rgb)
    return tuple(int(round(c + (255 - c) * (factor - 1))) for c in rgb)


def _contrasting_neutral(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """A white or near-black that stands out against ``rgb`` (an open jacket's inner layer)."""
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (236, 236, 232) if luminance < 140 else (38, 38, 42)


def garment_details(upper_type: str, label: int, rgb: tuple[int, int, int], view: str, facing: int, h: float,
                    shoulder_w: float, shoulder_y: float, bottom_y: float, bottom_w: float) -> list[Shape]:
    """What tells upper garments of one shape apart, sized to survive a 4x downscale: a
    jacket's open front (a dark yoke from behind), a shirt's light collar and button placket, a
    sweater's ribbed hem band; a t-shirt is plain and a coat is long."""
    shapes: list[Shape] = []
    side = view == "side"
    centre = facing * shoulder_w * 0.55 if side else 0.0
    neck_y = shoulder_y + 0.005 * h
    if upper_type == "jacket":
        if view == "back":   # a dark yoke across the shoulders, wider than long hair
            shapes.append(Shape(label, _shade(rgb, 0.55), _quad(
                (-shoulder_w, neck_y), (shoulder_w, neck_y),
                (shoulder_w * 0.97, neck_y + 0.055 * h), (-shoulder_w * 0.97, neck_y + 0.055 * h))))
        else:
            half = 0.035 * h if not side else 0.02 * h
            shapes.append(Shape(label, _contrasting_neutral(rgb), _quad(
                (centre - half, neck_y), (centre + half, neck_y),
                (centre + half * 1.2, bottom_y), (centre - half * 1.2, bottom_y))))
    elif upper_type == "shirt":
        collar = _shade(rgb, 1.6)
        if view != "back":
            shapes.append(Shape(label, _shade(rgb, 0.5), _quad(
                (centre - 0.008 * h, neck_y), (centre + 0.008 * h, neck_y),
                (centre + 0.008 * h, bottom_y), (centre - 0.008 * h, bottom_y))))
            for sx in (-1, 1):
                shapes.append(Shape(label, collar, _quad(
                    (centre + sx * 0.004 * h, neck_y - 0.012 * h), (centre + sx * 0.055 * h, neck_y - 0.012 * h),
                    (centre + sx * 0.03 * h, neck_y + 0.045 * h))))
        else:
            shapes.append(Shape(label, collar, _quad(
                (-0.055 * h, neck_y - 0.012 * h), (0.055 * h, neck_y - 0.012 * h),
                (0.045 * h, neck_y + 0.03 * h), (-0.045 * h, neck_y + 0.03 * h))))
    elif upper_type == "sweater":
        shapes.append(Shape(label, _shade(rgb, 0.6), _quad(
            (-bottom_w, bottom_y - 0.045 * h), (bottom_w, bottom_y - 0.045 * h),
            (bottom_w, bottom_y), (-bottom_w, bottom_y))))
    return shapes


def figure_shapes(appearance: dict[str, str], pose: Pose) -> list[Shape]:
    """The polygons of a person, back to front, in the body frame (y down, feet at 0)."""
    a = appearance
    h = pose.height
    view, facing = pose.view, pose.facing
    side = view == "side"
    build = _BUILD_WIDTH[a["build"]]
    woman = a["gender"] == "woman"
    skin = vocab.SKIN_TONES[a["skin"]]
    hair_rgb = vocab.HAIR_COLOURS[a["hair_colour"]]
    upper_rgb = vocab.COLOURS[a["upper_colour"]]
    lower_rgb = vocab.COLOURS[a["lower_colour"]] if a["lower_colour"] != "none" else upper_rgb
    shoe_rgb = vocab.COLOURS[a["shoes_colour"]]

    head_ry, head_rx = 0.062 * h, 0.047 * h
    head_cy = -h + head_ry
    shoulder_y, hip_y, ankle_y = -0.83 * h, -0.48 * h, -0.035 * h
    if side:
        shoulder_w, hip_w = 0.062 * h * build, 0.072 * h * build
    else:
        # Build scales both; gender changes their ratio (narrower shoulders, wider hips and a
        # waist), so that a figure's gender shows whatever its build.
        shoulder_w = 0.118 * h * build * (0.8 if woman else 1.0)
        hip_w = 0.094 * h * build * (1.16 if woman else 1.0)
    arm_len, arm_w = 0.36 * h, 0.052 * h * build * (0.82 if woman else 1.0)
    leg_len, leg_w = hip_y * -1 + ankle_y, 0.072 * h * build

    swing = math.sin(pose.phase)
    if side:
        arm_angles = (0.42 * swing * facing, -0.42 * swing * facing)
        leg_angles = (-0.34 * swing * facing, 0.34 * swing * facing)
        arm_x = (0.0, 0.0)
        leg_x = (0.0, 0.0)
    else:
        arm_angles = (0.10 + 0.05 * swing, -0.10 + 0.05 * swing)
        leg_angles = (0.03 * swing, -0.03 * swing)
        arm_x = (shoulder_w - arm_w * 0.4, -(shoulder_w - arm_w * 0.4))
        leg_x = (hip_w * 0.52, -hip_w * 0.52)
    # Index 0 is the limb at +x in the body frame. Which of the person's sides that is depends
    # on the view: seen from the front, the person's left is on the image right.
    if view == "front":
        sides = ("left", "right")
    elif view == "back":
        sides = ("right", "left")
    else:
        sides = ("left", "right") if facing > 0 else ("right", "left")
    if a["umbrella"] == "yes" or a["phone"] == "yes":
        # The holding hand comes up in front of the chest.
        arm_angles = (arm_angles[0], (-0.9 if not side else 0.9 * facing))
    near_first = side  # in side view limb 0 is near the camera, limb 1 behind the body

    upper_label = LABEL["coat"] if a["upper_type"] == "coat" else (
        LABEL["dress"] if a["upper_type"] == "dress" else LABEL["upper_clothes"])
    pattern = a["upper_pattern"]
    sleeve_stop = 0.34 if a["sleeve"] == "short" else 0.9

    back_layer: list[Shape] = []
    body: list[Shape] = []
    front_layer: list[Shape] = []

    def limb_shapes(index: int) -> list[Shape]:
        side_name = sides[index]
        shapes = []
        # leg, lower garment over it, shoe
        lx, la = leg_x[index], leg_angles[index]
        shapes.append(Shape(LABEL[f"{side_name}_leg"], skin, _limb(lx, hip_y, la, leg_len, leg_w)))
        if a["lower_type"] == "trousers":
            shapes.append(Shape(LABEL["pants"], lower_rgb, _limb(lx, hip_y, la, leg_len, leg_w * 1.16, 0, 0.97)))
        elif a["lower_type"] == "jeans":
            # Jeans: close-fitting, with a faded front and turned-up light cuffs.
            shapes.append(Shape(LABEL["pants"], lower_rgb, _limb(lx, hip_y, la, leg_len, leg_w * 1.0, 0, 0.97)))
            shapes.append(Shape(LABEL["pants"], _shade(lower_rgb, 1.28), _limb(lx, hip_y, la, leg_len, leg_w * 0.42, 0.12, 0.5)))
            shapes.append(Shape(LABEL["pants"], _shade(lower_rgb, 1.5), _limb(lx, hip_y, la, leg_len, leg_w * 1.1, 0.88, 0.97)))
        elif a["lower_type"] == "shorts":
            shapes.append(Shape(LABEL["pants"], lower_rgb, _limb(lx, hip_y, la, leg_len, leg_w * 1.15, 0, 0.42)))
        fx, fy = _limb_end(lx, hip_y, la, leg_len)
        toe = facing * 0.035 * h if side else 0.0
        shapes.append(Shape(LABEL[f"{side_name}_shoe"], shoe_rgb,
                            _ellipse(fx + toe, fy + 0.012 * h, 0.052 * h if side else 0.034 * h, 0.026 * h)))
        return shapes

    def arm_shapes(index: int) -> list[Shape]:
        side_name = sides[index]
        ax, aa = arm_x[index], arm_angles[index]
        shapes = [Shape(LABEL[f"{side_name}_arm"], skin, _limb(ax, shoulder_y + 0.02 * h, aa, arm_len, arm_w))]
        shapes.append(Shape(upper_label, upper_rgb,
                            _limb(ax, shoulder_y + 0.02 * h, aa, arm_len, arm_w * 1.12, 0, sleeve_stop), pattern))
        if a["upper_type"] == "sweater":   # ribbed cuffs
            shapes.append(Shape(upper_label, _shade(upper_rgb, 0.6),
                                _limb(ax, shoulder_y + 0.02 * h, aa, arm_len, arm_w * 1.16, sleeve_stop - 0.12, sleeve_stop)))
        return shapes

    # --- legs and lower garments
    hip_block = _quad((-hip_w, hip_y), (hip_w, hip_y), (hip_w * 0.9, hip_y + 0.09 * h), (-hip_w * 0.9, hip_y + 0.09 * h))
    legs = [limb_shapes(0), limb_shapes(1)]
    if near_first:
        body += legs[1] + legs[0]
    else:
        body += legs[0] + legs[1]
    if a["lower_type"] in ("trousers", "jeans", "shorts"):
        body.append(Shape(LABEL["pants"], lower_rgb, hip_block))
    elif a["lower_type"] == "skirt":
        flare = hip_w * 1.35 + (0.03 * h if side else 0)
        body.append(Shape(LABEL["skirt"], lower_rgb,
                          _quad((-hip_w, hip_y - 0.01 * h), (hip_w, hip_y - 0.01 * h), (flare, -0.24 * h), (-flare, -0.24 * h))))

    # --- long hair falls behind the shoulders (seen from the front or the side)
    long_hair = a["hair_length"] == "long"
    if long_hair and view != "back":
        back_layer.append(Shape(LABEL["hair"], hair_rgb, _quad(
            (-head_rx * 1.1, head_cy), (head_rx * 1.1, head_cy),
            (head_rx * 1.25, shoulder_y + 0.1 * h), (-head_rx * 1.25, shoulder_y + 0.1 * h))))

    # --- bags behind the body
    bag_rgb = vocab.COLOURS[a["bag_colour"]] if a["bag_colour"] != "none" else (0, 0, 0)
    if a["bag"] == "backpack" and side:
        back = -facing
        back_layer.append(Shape(LABEL["bag"], bag_rgb, _quad(
            (back * shoulder_w, shoulder_y + 0.03 * h), (back * (shoulder_w + 0.075 * h), shoulder_y + 0.05 * h),
            (back * (shoulder_w + 0.075 * h), hip_y - 0.03 * h), (back * shoulder_w, hip_y - 0.02 * h))))

    # --- far arm in side view goes behind the torso
    if near_first:
        back_layer += arm_shapes(1)

    # --- torso garment (coats and dresses run further down)
    neck = Shape(LABEL["face"], skin, _quad((-0.02 * h, head_cy + head_ry * 0.6), (0.02 * h, head_cy + head_ry * 0.6),
                                            (0.022 * h, shoulder_y + 0.01 * h), (-0.022 * h, shoulder_y + 0.01 * h)))
    body.append(neck)
    torso_bottom = hip_y + 0.02 * h
    bottom_w = hip_w
    if a["upper_type"] == "coat":
        torso_bottom, bottom_w = -0.25 * h, hip_w * 1.18
    elif a["upper_type"] == "dress":
        torso_bottom, bottom_w = -0.22 * h, hip_w * 1.45
    waist_y = 0.45 * shoulder_y + 0.55 * hip_y
    waist_w = hip_w * 0.72 if woman and not side else 0.45 * shoulder_w + 0.55 * hip_w
    torso = _quad((-shoulder_w, shoulder_y), (shoulder_w, shoulder_y), (waist_w, waist_y), (hip_w * 0.98, hip_y - 0.04 * h),
                  (bottom_w, torso_bottom), (-bottom_w, torso_bottom), (-hip_w * 0.98, hip_y - 0.04 * h), (-waist_w, waist_y))
    body.append(Shape(upper_label, upper_rgb, torso, pattern))
    body += garment_details(a["upper_type"], upper_label, upper_rgb, view, facing, h,
                            shoulder_w, shoulder_y, torso_bottom, bottom_w)

    # --- head: face, then hair over it
    if view == "back":
        body.append(Shape(LABEL["hair"], hair_rgb, _ellipse(0, head_cy, head_rx * 1.04, head_ry * 1.03)))
        if long_hair:
            body.append(Shape(LABEL["hair"], hair_rgb, _quad(
                (-head_rx * 1.1, head_cy), (head_rx * 1.1, head_cy),
                (head_rx * 1.3, shoulder_y + 0.12 * h), (-head_rx * 1.3, shoulder_y + 0.12 * h))))
    else:
        face_shift = facing * head_rx * 0.15 if side else 0.0
        body.append(Shape(LABEL["face"], skin, _ellipse(face_shift, head_cy, head_rx, head_ry)))
        cap_shift = -face_shift * 1.6
        body.append(Shape(LABEL["hair"], hair_rgb,
                          _ellipse(cap_shift, head_cy - head_ry * 0.18, head_rx * 1.08, head_ry * 0.9, math.pi, 2 * math.pi)))
        if a["glasses"] == "yes":
            eye_y = head_cy - head_ry * 0.02
            if side:
                x0, x1 = face_shift + facing * head_rx * 0.25, face_shift + facing * head_rx * 1.02
            else:
                x0, x1 = -head_rx * 0.85, head_rx * 0.85
            body.append(Shape(LABEL["sunglasses"], _GLASSES_RGB, _quad(
                (min(x0, x1), eye_y - head_ry * 0.14), (max(x0, x1), eye_y - head_ry * 0.14),
                (max(x0, x1), eye_y + head_ry * 0.16), (min(x0, x1), eye_y + head_ry * 0.16))))
    if a["hat"] == "yes":
        hat_rgb = vocab.COLOURS[a["hat_colour"]]
        body.append(Shape(LABEL["hat"], hat_rgb,
                          _ellipse(0, head_cy - head_ry * 0.35, head_rx * 1.12, head_ry * 0.8, math.pi, 2 * math.pi)))
        body.append(Shape(LABEL["hat"], hat_rgb, _quad(
            (-head_rx * 1.35, head_cy - head_ry * 0.42), (head_rx * 1.35, head_cy - head_ry * 0.42),
            (head_rx * 1.35, head_cy - head_ry * 0.28), (-head_rx * 1.35, head_cy - head_ry * 0.28))))

    # --- bags over the body
    if a["bag"] == "backpack" and view == "back":
        front_layer.append(Shape(LABEL["bag"], bag_rgb, _quad(
            (-shoulder_w * 0.72, shoulder_y + 0.04 * h), (shoulder_w * 0.72, shoulder_y + 0.04 * h),
            (shoulder_w * 0.78, hip_y - 0.01 * h), (-shoulder_w * 0.78, hip_y - 0.01 * h))))
    elif a["bag"] == "backpack" and view == "front":
        for sx in (-1, 1):
            front_layer.append(Shape(LABEL["bag"], bag_rgb, _quad(
                (sx * shoulder_w * 0.55, shoulder_y), (sx * shoulder_w * 0.78, shoulder_y),
                (sx * shoulder_w * 0.72, shoulder_y + 0.2 * h), (sx * shoulder_w * 0.5, shoulder_y + 0.2 * h))))
    elif a["bag"] == "shoulder bag":
        strap_side = 1 if view != "back" else -1
        front_layer.append(Shape(LABEL["bag"], bag_rgb, _quad(
            (-strap_side * shoulder_w * 0.7, shoulder_y), (-strap_side * shoulder_w * 0.45, shoulder_y),
            (strap_side * hip_w * 0.95, hip_y - 0.02 * h), (strap_side * hip_w * 0.7, hip_y - 0.02 * h))))
        bx = strap_side * hip_w * (0.95 if not side else 0.3)
        front_layer.append(Shape(LABEL["bag"], bag_rgb, _quad(
            (bx - 0.05 * h, hip_y - 0.04 * h), (bx + 0.05 * h, hip_y - 0.04 * h),
            (bx + 0.05 * h, hip_y + 0.05 * h), (bx - 0.05 * h, hip_y + 0.05 * h))))

    # --- arms (near arm in front of the torso in side view)
    if near_first:
        front_layer += arm_shapes(0)
    else:
        front_layer += arm_shapes(0) + arm_shapes(1)

    # --- things held in the hands
    hand0 = _limb_end(arm_x[0], shoulder_y + 0.02 * h, arm_angles[0], arm_len)
    hand1 = _limb_end(arm_x[1], shoulder_y + 0.02 * h, arm_angles[1], arm_len)
    if a["bag"] == "handbag":
        hx, hy = hand0
        front_layer.append(Shape(LABEL["bag"], bag_rgb, _quad(
            (hx - 0.045 * h, hy), (hx + 0.045 * h, hy), (hx + 0.05 * h, hy + 0.08 * h), (hx - 0.05 * h, hy + 0.08 * h))))
    if a["phone"] == "yes" and view != "back":
        hx, hy = hand1
        front_layer.append(Shape(LABEL["phone"], _PHONE_RGB, _quad(
            (hx - 0.014 * h, hy - 0.03 * h), (hx + 0.014 * h, hy - 0.03 * h),
            (hx + 0.014 * h, hy + 0.01 * h), (hx - 0.014 * h, hy + 0.01 * h))))
    if a["umbrella"] == "yes":
        umbrella_rgb = vocab.COLOURS[a["umbrella_colour"]]
        hx, hy = hand1
        top = -h - 0.06 * h
        front_layer.append(Shape(LABEL["umbrella"], (60, 60, 60), _quad(
            (hx - 0.006 * h, hy), (hx + 0.006 * h, hy), (hx + 0.006 * h, top), (hx - 0.006 * h, top))))
        front_layer.append(Shape(LABEL["umbrella"], umbrella_rgb,
                                 _ellipse(hx, top + 0.02 * h, 0.22 * h, 0.11 * h, math.pi, 2 * math.pi, 20)))
    return back_layer + body + front_layer


def _to_pixels(polygon: np.ndarray, pose: Pose) -> list[tuple[float, float]]:
    c, s = math.cos(pose.lean), math.sin(pose.lean)
    x = polygon[:, 0] * c - polygon[:, 1] * s + pose.centre_x
    y = polygon[:, 0] * s + polygon[:, 1] * c + pose.foot_y
    return list(zip(x.tolist(), y.tolist()))


# ----------------------------------------------------------------------------- pixels


def _pattern_image(size: tuple[int, int], rgb: tuple[int, int, int], pattern: str, period: int) -> Image.Image:
    width, height = size
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    contrast = np.array((30, 30, 34) if luminance > 110 else (225, 225, 220), dtype=np.uint8)
    rows = (np.arange(height) // max(1, period // 2)) % 2 == 1
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = np.array(rgb, dtype=np.uint8)
    if pattern == "striped":
        pixels[rows] = contrast
    else:  # checked: thin lines both ways
        line_rows = (np.arange(height) % period) < max(1, period // 4)
        line_cols = (np.arange(width) % period) < max(1, period // 4)
        pixels[line_rows] = contrast
        pixels[:, line_cols] = contrast
    return Image.fromarray(pixels, "RGB")


def draw_figure(canvas: Image.Image, mask: Image.Image, appearance: dict[str, str], pose: Pose) -> None:
    """Draw the person onto ``canvas`` (RGB) and its part labels onto ``mask`` (L), in place."""
    draw = ImageDraw.Draw(canvas)
    mask_draw = ImageDraw.Draw(mask)
    period = max(4, int(round(pose.height * 0.045)))
    patterns: dict[str, Image.Image] = {}
    for shape in figure_shapes(appearance, pose):
        points = _to_pixels(shape.polygon, pose)
        if shape.pattern != "plain" and shape.label in (LABEL["upper_clothes"], LABEL["coat"], LABEL["dress"]):
            if shape.pattern not in patterns:
                patterns[shape.pattern] = _pattern_image(canvas.size, shape.fill, shape.pattern, period)
            stencil = Image.new("L", canvas.size, 0)
            ImageDraw.Draw(stencil).polygon(points, fill=255)
            canvas.paste(patterns[shape.pattern], (0, 0), stencil)
        else:
            draw.polygon(points, fill=shape.fill)
        mask_draw.polygon(points, fill=shape.label)


@lru_cache(maxsize=64)
def background_texture(seed: int, width: int, height: int) -> np.ndarray:
    """A camera's scene behind the people: wall, windows or shop fronts, ground, texture."""
    rng = np.random.default_rng(seed)
    wall = rng.uniform(60, 200, size=3)
    ground = rng.uniform(50, 170, size=3)
    image = np.empty((height, width, 3), dtype=np.float32)
    horizon = int(height * rng.uniform(0.55, 0.75))
    image[:horizon] = wall
    image[horizon:] = ground
    for _ in range(int(rng.integers(6, 14))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, horizon))
        w, h = int(rng.integers(width // 20 + 2, width // 4 + 3)), int(rng.integers(height // 20 + 2, height // 3 + 3))
        image[y0:y0 + h, x0:x0 + w] = rng.uniform(30, 230, size=3)
    stripe_period = int(rng.integers(12, 40))
    image[horizon:, :] *= (1.0 + 0.08 * (((np.arange(width) // stripe_period) % 2)[None, :, None] - 0.5))
    image += rng.normal(0, 6, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def apply_camera(image: Image.Image, style: CameraStyle, light: float, downscale: float,
                 noise_seed: int) -> Image.Image:
    """Camera look: resolution, blur, colour cast and tone, illumination, sensor noise.

    Runs on 8-bit images in Pillow's C paths (a colour-matrix convert and a lookup table), which
    keeps generation at hundreds of crops per second per core.
    """
    width, height = image.size
    if downscale > 1.01:
        small = (max(8, int(width / downscale)), max(8, int(height / downscale)))
        image = image.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR)
    if style.blur > 0.05:
        image = image.filter(ImageFilter.BoxBlur(style.blur))
    matrix = [v for row, offset in zip(style.colour_matrix, style.offset) for v in (*row, offset * 255.0)]
    image = image.convert("RGB", tuple(matrix))
    image = image.point(_tone_table(style.gamma, round(light, 3)))
    pixels = np.asarray(image, dtype=np.int16)
    if style.noise > 0:
        # Triangular noise from two uniform integer draws: close to Gaussian, and far cheaper.
        rng = np.random.default_rng(noise_seed)
        half = max(1, int(round(style.noise * 1.22)))
        noise = rng.integers(-half, half + 1, size=pixels.shape, dtype=np.int16)
        noise += rng.integers(-half, half + 1, size=pixels.shape, dtype=np.int16)
        pixels = pixels + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


@lru_cache(maxsize=4096)
def _tone_table(gamma: float, light: float) -> list[int]:
    levels = np.clip(255.0 * np.power(np.arange(256) / 255.0, gamma) * light, 0, 255).round().astype(int)
    return levels.tolist() * 3


def render_shot(spec: ShotSpec, style: CameraStyle, size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """One person crop (RGB) and its part mask (L, labels of ``vocabulary.PART_LABELS``)."""
    width, height = size
    texture = background_texture(style.background_seed, width * 3, int(height * 1.5))
    ox, oy = spec.background_offset
    canvas = Image.fromarray(np.ascontiguousarray(texture[oy:oy + height, ox:ox + width]), "RGB")
    mask = Image.new("L", size, 0)
    if spec.appearance:  # an empty appearance is a junk detection: background only
        draw_figure(canvas, mask, dict(spec.appearance), spec.pose)
    if spec.occluder is not None:
        ImageDraw.Draw(canvas).rectangle(spec.occluder.box, fill=spec.occluder.colour)
        ImageDraw.Draw(mask).rectangle(spec.occluder.box, fill=0)
    return apply_camera(canvas, style, spec.light, spec.downscale, spec.noise_seed), mask


def render_cutout(appearance: dict[str, str], pose: Pose, size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """The person alone (no background, no camera effects), for composing scenes."""
    canvas = Image.new("RGB", size, (0, 0, 0))
    mask = Image.new("L", size, 0)
    draw_figure(canvas, mask, appearance, pose)
    return canvas, mask
