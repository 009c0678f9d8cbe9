"""``generate_world``: the synthetic person world, written in the real datasets' formats."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from personvl.config import build_config, config_to_dict, read_yaml_mapping, save_config
from personvl.data.synth import appearance as appearance_sampling
from personvl.data.synth import captions as caption_grammar
from personvl.data.synth import vocabulary as vocab
from personvl.data.synth.render import CameraStyle, ShotSpec, camera_style, render_shot
from personvl.data.synth.scenes import SceneSpec, layout_people, render_scene, scene_boxes
from personvl.data.synth.parallel import default_workers, run_parallel
from personvl.data.synth.shots import hidden_parts, identity_cameras, sample_shot
from personvl.errors import PersonvlError, UsageError

MAX_CAMERAS = 9  # Market-1501 file names carry the camera as one digit (regex c(\d))
WORLD_FILE = "world.json"
RECORDS_FILE = "records.jsonl"
CONFIG_FILE = "world_config.yaml"


@dataclass
class WorldConfig:
    """Every knob of the synthetic world. Defaults are calibrated to be realistically hard."""

    identities: int = 2000
    images_per_identity: int = 4
    cameras: int = 6
    seed: int = 0
    image_height: int = 256
    image_width: int = 128
    test_fraction: float = 0.5          # 1,000 test identities at the default size (CUHK-PEDES)
    val_fraction: float = 0.05
    family_size: int = 4                # look-alike identities per family
    family_max_differences: int = 2     # details that tell family members apart (1..this)
    captions_per_image: int = 2
    mention_rate: float = 0.6           # chance a visible item is described
    caption_error_rate: float = 0.06    # chance a stated colour is wrong
    camera_strength: float = 1.0        # how strongly cameras shift colours
    occlusion_rate: float = 0.15
    low_resolution_rate: float = 0.3
    scene_identities: int = 200         # identities per split shown in person-search scenes
    scene_appearances: int = 2          # scenes each of them appears in
    scene_width: int = 640
    scene_height: int = 360
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        checks = [
            (self.identities >= 3, f"identities must be at least 3 (train, val and test each need one), got {self.identities}"),
            (self.images_per_identity >= 2, f"images_per_identity must be at least 2 (re-ID needs a query and a gallery image), got {self.images_per_identity}"),
            (2 <= self.cameras <= MAX_CAMERAS, f"cameras must be between 2 and {MAX_CAMERAS} (Market-1501 names hold one camera digit), got {self.cameras}"),
            (self.image_height >= 64 and self.image_width >= 32, f"image size must be at least 64x32, got {self.image_height}x{self.image_width}"),
            (0 < self.test_fraction < 1 and 0 <= self.val_fraction < 1 and self.test_fraction + self.val_fraction < 1,
             "test_fraction and val_fraction must be in (0, 1) and leave room for train"),
            (self.family_size >= 1 and self.family_max_differences >= 1, "family_size and family_max_differences must be at least 1"),
            (self.captions_per_image >= 1, "captions_per_image must be at least 1"),
            (all(0 <= r <= 1 for r in (self.mention_rate, self.caption_error_rate, self.occlusion_rate, self.low_resolution_rate)),
             "rates must lie in [0, 1]"),
            (self.scene_appearances >= 1 and self.scene_identities >= 0, "scene_appearances must be >= 1 and scene_identities >= 0"),
            (1 <= self.jpeg_quality <= 100, "jpeg_quality must be in 1..100"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.image_width, self.image_height


@dataclass(frozen=True)
class Splits:
    train: range
    val: range
    test: range

    def of(self, index: int) -> str:
        return "train" if index in self.train else ("val" if index in self.val else "test")


def split_identities(config: WorldConfig) -> Splits:
    """Contiguous identity ranges (families stay together, so test holds its look-alikes)."""
    n = config.identities
    n_test = min(n - 2, max(1, round(n * config.test_fraction)))
    n_val = min(n - 1 - n_test, max(1, round(n * config.val_fraction)))
    n_train = n - n_test - n_val
    return Splits(range(0, n_train), range(n_train, n_train + n_val), range(n_train + n_val, n))


# ----------------------------------------------------------------------------- planning


@dataclass
class WorldPlan:
    config: WorldConfig
    splits: Splits
    identities: list[dict[str, str]]
    records: list[dict[str, Any]]           # one per person crop, in pid/image order
    shots: list[ShotSpec]                   # aligned with records
    junk: list[tuple[str, ShotSpec]]        # background-only crops (Market-1501 pid -1)
    scenes: list[SceneSpec]
    styles: list[CameraStyle]


def plan_world(config: WorldConfig) -> WorldPlan:
    """Decide every identity, shot, caption and scene. Cheap and deterministic: the pixels are
    drawn afterwards from this plan, so an interrupted run re-plans identically."""
    seed = config.seed
    identities = appearance_sampling.sample_identities(
        np.random.default_rng([seed, 1]), config.identities, config.family_size, config.family_max_differences)
    splits = split_identities(config)
    styles = [camera_style(seed, cam, config.camera_strength) for cam in range(config.cameras)]
    width, height = config.image_size
    records, shots = [], []
    for index, appearance in enumerate(identities):
        pid = index + 1
        rng = np.random.default_rng([seed, 2, index])
        cameras = identity_cameras(rng, config.images_per_identity, config.cameras)
        for k, camera in enumerate(cameras):
            shot = sample_shot(rng, appearance, camera, width, height, config.occlusion_rate, config.low_resolution_rate)
            feet_hidden, legs_hidden = hidden_parts(shot.pose, shot.occluder)
            seen = caption_grammar.visible_slots(appearance, shot.pose.view, feet_hidden, legs_hidden)
            text_rng = np.random.default_rng([seed, 3, index, k])
            captions = caption_grammar.write_captions(
                text_rng, seen, shot.pose.view, config.captions_per_image, config.mention_rate, config.caption_error_rate)
            attribute_text = caption_grammar.attribute_string(appearance, seen)
            name = f"{pid:05d}_{k:02d}"
            records.append({
                "image": f"images/{name}.jpg",
                "mask": f"masks/{name}.png",
                "pid": pid,
                "camid": camera,
                "split": splits.of(index),
                "view": shot.pose.view,
                "captions": [c.text for c in captions],
                "mentions": [[[m.slot, m.value, m.correct] for m in c.mentions] for c in captions],
                "attributes": vocab.attribute_vector(appearance, shot.pose.view),
                "visible": seen,
                "attribute_string": attribute_text,
                "prompt_captions": [caption_grammar.prompt_caption(text_rng, attribute_text)],
            })
            shots.append(shot)
    junk_rng = np.random.default_rng([seed, 4])
    junk = []
    for j in range(max(1, len(splits.test) // 50)):
        camera = int(junk_rng.integers(config.cameras))
        spec = sample_shot(junk_rng, {}, camera, width, height, 0.5, config.low_resolution_rate)
        junk.append((f"junk/{j:05d}.jpg", dataclasses.replace(spec, appearance=())))
    scenes = plan_scenes(config, identities, splits)
    return WorldPlan(config, splits, identities, records, shots, junk, scenes, styles)


def plan_scenes(config: WorldConfig, identities: list[dict[str, str]], splits: Splits) -> list[SceneSpec]:
    """Scene frames: each chosen identity appears in ``scene_appearances`` frames of different
    cameras, with 2..4 people per frame and now and then an unlabelled passer-by."""
    rng = np.random.default_rng([config.seed, 5])
    scenes: list[SceneSpec] = []
    frame = (config.scene_width, config.scene_height)
    for split_name, ids in (("train", splits.train), ("test", splits.test)):
        chosen = list(ids)[: config.scene_identities]
        appearances = [pid_index for pid_index in chosen for _ in range(config.scene_appearances)]
        order = [appearances[i] for i in rng.permutation(len(appearances))]
        while order:
            size = min(len(order), int(rng.integers(2, 5)))
            group, order = order[:size], order[size:]
            group = list(dict.fromkeys(group))  # one person once per frame
            members = [(i + 1, identities[i]) for i in group]
            if rng.random() < 0.3:
                members.append((-2, appearance_sampling.sample_prototype(rng)))
            camera = int(rng.integers(config.cameras))
            name = f"c{camera + 1}s{1 if split_name == 'train' else 2}_{len(scenes):06d}"
            scenes.append(SceneSpec(name, camera, layout_people(rng, members, frame),
                                    float(rng.uniform(0.85, 1.1)), int(rng.integers(2**31))))
    return scenes


# ----------------------------------------------------------------------------- rendering


def _atomic_save(image, path: Path, **params) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="JPEG" if path.suffix == ".jpg" else "PNG", **params)
    os.replace(tmp, path)


def _render_crop(task: tuple[ShotSpec, CameraStyle, tuple[int, int], str, str | None, int]) -> None:
    spec, style, size, image_path, mask_path, quality = task
    image, mask = render_shot(spec, style, size)
    if mask_path is not None:
        _atomic_save(mask, Path(mask_path), compress_level=1)
    _atomic_save(image, Path(image_path), quality=quality)


def _render_frame(task: tuple[SceneSpec, CameraStyle, tuple[int, int], str, int]) -> None:
    spec, style, frame, path, quality = task
    _atomic_save(render_scene(spec, style, frame), Path(path), quality=quality)


# ----------------------------------------------------------------------------- entry point


def resolve_world_config(identities: int | None = None, images_per_identity: int | None = None,
                         cameras: int | None = None, seed: int | None = None,
                         config: str | os.PathLike | WorldConfig | None = None, **knobs: Any) -> WorldConfig:
    """Defaults, then a YAML file (or a WorldConfig), then explicit arguments and knobs."""
    if isinstance(config, WorldConfig):
        values = config_to_dict(config)
    elif config is not None:
        values = read_yaml_mapping(config)
    else:
        values = {}
    explicit = {"identities": identities, "images_per_identity": images_per_identity,
                "cameras": cameras, "seed": seed}
    values.update({k: v for k, v in explicit.items() if v is not None})
    values.update(knobs)
    return build_config(WorldConfig, values)


def generate_world(
    out_dir: str | os.PathLike,
    identities: int | None = None,
    images_per_identity: int | None = None,
    cameras: int | None = None,
    seed: int | None = None,
    *,
    config: str | os.PathLike | WorldConfig | None = None,
    workers: int | None = None,
    progress: bool = True,
    preview: bool = False,
    **knobs: Any,
) -> dict[str, Any]:
    """Generate the synthetic person world into ``out_dir``; returns the content of world.json.

    The same arguments give byte-identical files. A run that was interrupted can be started
    again with the same arguments: finished images are kept and the rest is completed.
    ``knobs`` are any other ``WorldConfig`` field (``mention_rate=0.3`` ...).
    """
    from personvl.data.synth.calibration import calibrate
    from personvl.data.synth.formats import write_all_formats

    resolved = resolve_world_config(identities, images_per_identity, cameras, seed, config, **knobs)
    out = Path(out_dir)
    _prepare_output(out, resolved)
    workers = default_workers() if workers is None else max(1, int(workers))

    plan = plan_world(resolved)
    for sub in ("images", "masks", "junk", "scenes"):
        (out / sub).mkdir(exist_ok=True)
    crop_tasks = [
        (shot, plan.styles[shot.camera], resolved.image_size, str(out / r["image"]), str(out / r["mask"]), resolved.jpeg_quality)
        for shot, r in zip(plan.shots, plan.records)
        if not (out / r["image"]).exists()
    ]
    crop_tasks += [
        (spec, plan.styles[spec.camera], resolved.image_size, str(out / name), None, resolved.jpeg_quality)
        for name, spec in plan.junk if not (out / name).exists()
    ]
    run_parallel(_render_crop, crop_tasks, workers, "person crops", progress)
    frame = (resolved.scene_width, resolved.scene_height)
    frame_tasks = [
        (scene, plan.styles[scene.camera], frame, str(out / "scenes" / f"{scene.name}.jpg"), resolved.jpeg_quality)
        for scene in plan.scenes if not (out / "scenes" / f"{scene.name}.jpg").exists()
    ]
    run_parallel(_render_frame, frame_tasks, workers, "scene frames", progress)

    # The header line makes records.jsonl a ``jsonl`` dataset: load_dataset("jsonl", out, "train").
    header = {"attribute_names": vocab.attribute_names(), "part_names": list(vocab.PART_LABELS)}
    _write_jsonl(out / RECORDS_FILE, [header, *plan.records])
    scene_annotations = [(scene, scene_boxes(scene)) for scene in plan.scenes]
    dataset_dirs = write_all_formats(out, plan, scene_annotations, workers, progress)
    calibration = calibrate(out, plan, workers)
    world = {
        "format_version": 1,
        "config": config_to_dict(resolved),
        "counts": {
            "identities": resolved.identities,
            "images": len(plan.records),
            "captions": sum(len(r["captions"]) for r in plan.records),
            "cameras": resolved.cameras,
            "scenes": len(plan.scenes),
            "junk_images": len(plan.junk),
        },
        "splits": {name: {"identities": len(ids), "first_pid": ids.start + 1, "last_pid": ids.stop}
                   for name, ids in (("train", plan.splits.train), ("val", plan.splits.val), ("test", plan.splits.test))},
        "datasets": dataset_dirs,
        "vocabulary": {
            "appearance_slots": {slot: list(values) for slot, values in vocab.APPEARANCE_SLOTS.items()},
            "caption_slots": list(vocab.CAPTION_SLOTS),
            "colours": {name: list(rgb) for name, rgb in vocab.COLOURS.items()},
            "attribute_names": vocab.attribute_names(),
            "part_labels": list(vocab.PART_LABELS),
            "views": list(vocab.VIEWS),
        },
        "calibration": calibration,
    }
    if preview:
        from personvl.data.synth.preview import write_contact_sheet

        world["preview"] = os.path.relpath(write_contact_sheet(out, plan), out)
    _write_json(out / WORLD_FILE, world)
    return world


def _prepare_output(out: Path, config: WorldConfig) -> None:
    """Create ``out`` and make sure it is ours to write: new, or a run of the same config."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise PersonvlError(f"cannot write to {out}: {exc.strerror or exc}") from None
    saved = out / CONFIG_FILE
    if saved.exists():
        previous = read_yaml_mapping(saved)
        if previous != config_to_dict(config):
            changed = sorted(k for k in set(previous) | set(config_to_dict(config))
                             if previous.get(k) != config_to_dict(config).get(k))
            raise PersonvlError(
                f"{out} holds a world generated with other settings (differs in: {', '.join(changed)}); "
                "use the same arguments to complete it, or choose another directory")
    elif any(out.iterdir()):
        raise PersonvlError(f"{out} is not empty and is not a synthetic world; choose an empty or new directory")
    save_config(config, out, CONFIG_FILE)


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def load_world(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Read world.json of a generated world (raises a clear error when it is missing)."""
    path = Path(out_dir) / WORLD_FILE
    if not path.exists():
        raise PersonvlError(f"{path} not found: {out_dir} is not a finished synthetic world")
    return json.loads(path.read_text(encoding="utf-8"))


def read_world_records(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The ground-truth rows of records.jsonl (without its header line)."""
    path = Path(out_dir) / RECORDS_FILE
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [row for row in rows if "image" in row]
