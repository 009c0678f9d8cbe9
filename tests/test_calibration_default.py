"""The acceptance figures of the default world: realistic difficulty, not a solved toy."""

import pytest

from personvl.data.synth import generate_world


@pytest.mark.slow
def test_default_world_is_calibrated(tmp_path):
    world = generate_world(tmp_path / "default", workers=2, progress=False)
    calibration = world["calibration"]
    assert world["splits"]["test"]["identities"] == 1000
    assert 40.0 <= calibration["oracle_t2i_R1"] <= 85.0
    assert calibration["color_histogram_reid_mAP"] < 50.0
    assert calibration["chance_t2i_R1"] == pytest.approx(0.1)
    assert 0.04 <= calibration["wrong_colour_share"] <= 0.08
