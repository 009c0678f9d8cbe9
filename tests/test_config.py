from dataclasses import dataclass, field

import pytest
import yaml

from personvl.config import apply_overrides, build_config, load_config, parse_override, save_config
from personvl.errors import UsageError


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Recipe:
    name: str = "plip"
    epochs: int = 10
    freeze: bool = False
    layers: list[int] = field(default_factory=list)
    checkpoint: str | None = None
    optim: Optim = field(default_factory=Optim)


def test_dotted_overrides_reach_nested_sections(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\noptim:\n  lr: 0.01\n")
    config = load_config(Recipe, path, ["optim.lr=1e-4", "epochs=3", "layers=[8, 9]", "freeze=true"])
    assert config.optim.lr == pytest.approx(1e-4)
    assert config.optim.betas == (0.9, 0.999)
    assert (config.name, config.epochs, config.layers, config.freeze) == ("x", 3, [8, 9], True)


def test_unknown_key_names_the_full_dotted_key(tmp_path):
    with pytest.raises(UsageError, match=r"unknown config key 'optim\.lrr'"):
        load_config(Recipe, None, ["optim.lrr=1"])
    with pytest.raises(UsageError, match=r"unknown config key 'epoch'"):
        build_config(Recipe, {"epoch": 3})


def test_wrong_types_are_refused_with_the_key():
    with pytest.raises(UsageError, match=r"'epochs': expected an integer, got 'ten'"):
        load_config(Recipe, None, ["epochs=ten"])
    with pytest.raises(UsageError, match=r"'optim.betas': expected 2 values, got 3"):
        load_config(Recipe, None, ["optim.betas=[1, 2, 3]"])
    with pytest.raises(UsageError, match="expected true or false"):
        load_config(Recipe, None, ["freeze=1"])


def test_int_is_accepted_for_a_float_and_null_for_optional():
    config = load_config(Recipe, None, ["optim.lr=1", "checkpoint=null"])
    assert isinstance(config.optim.lr, float) and config.checkpoint is None


def test_malformed_override_and_yaml_errors_say_where(tmp_path):
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_override("optim.lr")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\noptim: [unclosed\n")
    with pytest.raises(UsageError, match=r"bad\.yaml, line \d+: invalid YAML"):
        load_config(Recipe, bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(UsageError, match="expected a mapping"):
        load_config(Recipe, scalar)


def test_override_into_a_value_is_an_error():
    with pytest.raises(UsageError, match=r"'name' is a value \('x'\), not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_saved_config_round_trips(tmp_path):
    config = load_config(Recipe, None, ["optim.lr=0.5", "layers=[1]"])
    path = save_config(config, tmp_path / "run")
    assert path.name == "config.yaml"
    assert yaml.safe_load(path.read_text())["optim"] == {"lr": 0.5, "betas": [0.9, 0.999]}
    assert load_config(Recipe, path) == config


@dataclass
class Model:
    weights: str | dict[str, str] | None = None
    options: dict[str, int] = field(default_factory=dict)


@dataclass
class WithModel:
    model: Model = field(default_factory=Model)


def test_a_key_is_a_value_or_a_mapping_and_overrides_fill_either_form(tmp_path):
    assert load_config(WithModel, None, ["model.weights=a.pt"]).model.weights == "a.pt"
    both = load_config(WithModel, None, ["model.weights.image=a.pt", "model.weights.text=b/"])
    assert both.model.weights == {"image": "a.pt", "text": "b/"}
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  weights:\n    image: openai\n    text: bert-base-uncased\n")
    assert load_config(WithModel, recipe, ["model.weights.image=RN50.pt"]).model.weights == {
        "image": "RN50.pt", "text": "bert-base-uncased"}
    empty = tmp_path / "empty.yaml"
    empty.write_text("model:\n  weights:\n")            # a key left empty takes sub-keys
    assert load_config(WithModel, empty, ["model.weights.text=b/"]).model.weights == {"text": "b/"}
    with pytest.raises(UsageError, match=r"'model\.weights' is a value \('a\.pt'\), not a section; "
                                         r"override model\.weights=\.\.\. as a whole"):
        load_config(WithModel, None, ["model.weights=a.pt", "model.weights.image=b.pt"])
    with pytest.raises(UsageError, match=r"'model\.weights': expected a string or a mapping, got 5"):
        load_config(WithModel, None, ["model.weights=5"])


def test_mapping_values_are_checked_against_their_declared_type():
    assert load_config(WithModel, None, ["model.options.width=3"]).model.options == {"width": 3}
    with pytest.raises(UsageError, match=r"'model\.options\.width': expected an integer, got 'wide'"):
        load_config(WithModel, None, ["model.options.width=wide"])
    with pytest.raises(UsageError, match=r"'model\.weights\.image': expected a string, got 3"):
        build_config(WithModel, {"model": {"weights": {"image": 3}}})


@dataclass
class WithTaskDefaults:
    # A task's own defaults for a shared section type, given by a factory.
    optim: Optim = field(default_factory=lambda: Optim(lr=3.5e-4, betas=(0.5, 0.9)))


def test_a_section_given_in_part_keeps_its_fields_own_defaults():
    config = load_config(WithTaskDefaults, None, ["optim.lr=0.001"])
    assert (config.optim.lr, tuple(config.optim.betas)) == (0.001, (0.5, 0.9))   # not the type's betas
    assert load_config(WithTaskDefaults).optim == Optim(lr=3.5e-4, betas=(0.5, 0.9))
    with pytest.raises(UsageError, match="unknown config key 'optim.lrr'"):
        load_config(WithTaskDefaults, None, ["optim.lrr=0.1"])


def test_a_recipe_extends_another_section_by_section(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\noptim: {lr: 0.5, betas: [0.1, 0.2]}\nepochs: 3\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\noptim: {lr: 0.25}\n")
    config = load_config(Recipe, tmp_path / "child.yaml", ["epochs=7"])
    assert (config.name, config.optim.lr, tuple(config.optim.betas), config.epochs) == ("child", 0.25, (0.1, 0.2), 7)
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(UsageError, match="leads back to itself"):
        load_config(Recipe, tmp_path / "loop.yaml")
