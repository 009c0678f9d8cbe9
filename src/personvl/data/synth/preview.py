"""Contact sheet: identities (rows) seen by every camera (columns), with a caption each."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from personvl.data.synth.render import ShotSpec, render_shot
from personvl.data.synth.shots import sample_shot

if TYPE_CHECKING:
    from personvl.data.synth.world import WorldPlan

PREVIEW_FILE = "contact_sheet.png"


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType
        return ImageFont.load_default()


def write_contact_sheet(out: Path, plan: "WorldPlan", rows: int = 6, thumb_height: int = 192) -> Path:
    """``rows`` test identities (look-alike families are contiguous, so neighbours are often
    near-copies) in every camera: the world's images, rendered anew for unseen cameras."""
    config = plan.config
    width, height = config.image_size
    thumb_width = max(1, round(width * thumb_height / height))
    text_width, label_height = 360, 22
    cameras = config.cameras
    sheet = Image.new("RGB", (cameras * thumb_width + text_width, label_height + rows * thumb_height), "white")
    draw = ImageDraw.Draw(sheet)
    font, small = _font(15), _font(13)
    for cam in range(cameras):
        draw.text((cam * thumb_width + 6, 3), f"camera {cam + 1}", fill="black", font=font)
    draw.text((cameras * thumb_width + 8, 3), "a caption of its first image", fill="black", font=font)

    first_test = plan.splits.test.start
    indices = list(range(first_test, min(plan.splits.test.stop, first_test + rows)))
    for row, index in enumerate(indices):
        appearance = plan.identities[index]
        recorded = {r["camid"]: r for r in plan.records if r["pid"] == index + 1}
        rng = np.random.default_rng([config.seed, 6, index])
        top = label_height + row * thumb_height
        for cam in range(cameras):
            if cam in recorded:  # the world's own image of this identity in this camera
                image = Image.open(out / recorded[cam]["image"]).convert("RGB")
            else:  # a camera that never saw it: how it would look there
                spec: ShotSpec = sample_shot(rng, appearance, cam, width, height, 0.0, 0.0)
                image, _ = render_shot(spec, plan.styles[cam], config.image_size)
            sheet.paste(image.resize((thumb_width, thumb_height), Image.BILINEAR), (cam * thumb_width, top))
        first = min(recorded.values(), key=lambda r: r["image"])
        lines = [f"pid {index + 1}, camera {first['camid'] + 1}:"] + textwrap.wrap(first["captions"][0], 44)
        draw.multiline_text((cameras * thumb_width + 8, top + 8), "\n".join(lines[:10]), fill="black", font=small)
        draw.line([(0, top), (sheet.width, top)], fill=(200, 200, 200))
    path = out / PREVIEW_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    sheet.save(tmp, format="PNG")
    tmp.replace(path)
    return path
