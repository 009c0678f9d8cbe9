import pytest

from personvl.data.synth import generate_world

SMALL_WORLD = dict(identities=24, images_per_identity=4, cameras=4, seed=3,
                   scene_identities=6, scene_width=320, scene_height=180)
# Enough people for a tiny model trained from scratch to generalise to held-out identities.
MEDIUM_WORLD = dict(identities=200, images_per_identity=4, cameras=4, seed=3, scene_identities=0)
# Attributes need more people still: with a few hundred, a classifier trained from scratch
# learns who is who rather than what they wear.
LARGE_WORLD = dict(identities=1000, images_per_identity=4, cameras=4, seed=3, scene_identities=0)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A small world generated once per test process: (directory, world.json content)."""
    out = tmp_path_factory.mktemp("world") / "w"
    world = generate_world(out, workers=2, progress=False, preview=True, **SMALL_WORLD)
    return out, world


@pytest.fixture(scope="session")
def medium_world(tmp_path_factory):
    """A 200-identity world without scenes (a few seconds), generated once per test process."""
    out = tmp_path_factory.mktemp("medium-world") / "w"
    generate_world(out, workers=2, progress=False, preview=False, **MEDIUM_WORLD)
    return out


@pytest.fixture(scope="session")
def large_world(tmp_path_factory):
    """A 1,000-identity world without scenes (about ten seconds), generated once per test process."""
    out = tmp_path_factory.mktemp("large-world") / "w"
    generate_world(out, workers=2, progress=False, preview=False, **LARGE_WORLD)
    return out


@pytest.fixture
def one_torch_thread():
    """Runs a test with one intra-op torch thread, restoring the count afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
