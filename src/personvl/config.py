"""Typed configurations: YAML recipes, dotted command-line overrides, resolved copies on disk.

A config is a (possibly nested) dataclass. ``load_config`` reads a YAML file, applies overrides
such as ``optim.lr=1e-4`` and builds the dataclass, refusing any key the dataclass does not
declare so that a typo never silently falls back to a default. ``save_config`` writes the
resolved values next to a run's outputs so the run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml

from personvl.errors import UsageError

ConfigT = TypeVar("ConfigT")

RESOLVED_CONFIG_NAME = "config.yaml"


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key.sub=value`` into the dotted key and a YAML-parsed value."""
    key, sep, raw_value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"override {text!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError as exc:
        raise UsageError(f"override {text!r}: value is not valid YAML ({exc.problem})") from None
    return key, value


def apply_overrides(values: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``values`` with each dotted ``KEY=VALUE`` override set."""
    result = _deep_copy(values)
    for text in overrides:
        key, value = parse_override(text)
        node = result
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:           # absent, or a key left empty (null) in the recipe
                child = node[part] = {}
            if not isinstance(child, dict):
                section = ".".join(parts[:depth + 1])
                raise UsageError(f"override {text!r}: {section!r} is a value ({child!r}), not a section; "
                                 f"override {section}=... as a whole")
            node = child
        node[parts[-1]] = value
    return result


def build_config(cls: type[ConfigT], values: Mapping[str, Any] | None, *, path: str = "") -> ConfigT:
    """Build dataclass ``cls`` from a mapping, checking every key and converting types."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise UsageError(
            f"unknown config key '{where}{unknown[0]}' (known keys here: {', '.join(sorted(fields))})"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        dotted = f"{path}.{name}" if path else name
        factory = fields[name].default_factory
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, Mapping) and factory is not dataclasses.MISSING:
            # A section given in part keeps the rest of its own default (a task's Adam, say),
            # not the defaults of the section's type.
            value = _merged(dataclasses.asdict(factory()), value)
        kwargs[name] = _coerce(value, hints[name], dotted)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"config {path or cls.__name__}: {exc}") from None


def _merged(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update``'s keys set, sections merged key by key."""
    result = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = _merged(result[key], value)
        else:
            result[key] = value
    return result


def load_config(
    cls: type[ConfigT], path: str | os.PathLike | None = None, overrides: Iterable[str] = ()
) -> ConfigT:
    """Read a YAML recipe (or start from defaults when ``path`` is None) and apply overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        values = read_recipe(path)
    return build_config(cls, apply_overrides(values, overrides))


def read_recipe(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML recipe's values; ``extends: other.yaml`` (beside it) starts from that recipe, with
    this one's keys set over it section by section."""
    path = Path(path)
    values = read_yaml_mapping(path)
    parent = values.pop("extends", None)
    if parent is None:
        return values
    if not isinstance(parent, str):
        raise UsageError(f"{path}: extends must name a recipe file, got {parent!r}")
    base = (path.parent / parent).resolve()
    if base in _seen or base == path.resolve():
        raise UsageError(f"{path}: extends {parent} leads back to itself")
    return _merged(read_recipe(base, (*_seen, path.resolve())), values)


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """Load a YAML file whose top level must be a mapping; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UsageError(f"{path}: expected a mapping of config keys at the top level")
    return values


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (tuples become lists, paths strings)."""
    return _plain(dataclasses.asdict(config))


def save_config(config: Any, out_dir: str | os.PathLike, name: str = RESOLVED_CONFIG_NAME) -> Path:
    """Write the resolved config as YAML into ``out_dir`` atomically; returns the file path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target


def _coerce(value: Any, hint: Any, dotted: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for option in non_none:
            try:
                return _coerce(value, option, dotted)
            except UsageError as exc:
                errors.append(str(exc))
        # A mapping given where a mapping is one of the options has a fault inside it: say which.
        shaped = [e for a, e in zip(non_none, errors) if _same_shape(value, typing.get_origin(a) or a)]
        if len(non_none) == 1 or len(shaped) == 1:
            raise UsageError((shaped or errors)[0])
        kinds = " or ".join(_KINDS.get(typing.get_origin(a) or a, getattr(a, "__name__", str(a))) for a in non_none)
        raise UsageError(f"config key '{dotted}': expected {kinds}, got {value!r}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise UsageError(f"config key '{dotted}': expected a section (mapping), got {value!r}")
        return build_config(hint, value, path=dotted)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"config key '{dotted}': expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise UsageError(f"config key '{dotted}': expected {len(args)} values, got {len(value)}")
            items = [_coerce(v, a, f"{dotted}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_hint = args[0] if args else Any
            items = [_coerce(v, item_hint, f"{dotted}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise UsageError(f"config key '{dotted}': expected a mapping, got {value!r}")
        key_hint, value_hint = args if len(args) == 2 else (Any, Any)
        return {_coerce(k, key_hint, dotted): _coerce(v, value_hint, f"{dotted}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"config key '{dotted}': expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UsageError(f"config key '{dotted}': expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string; it is a number to anyone typing it.
            try:
                return float(value)
            except ValueError:
                pass
        raise UsageError(f"config key '{dotted}': expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise UsageError(f"config key '{dotted}': expected a string, got {value!r}")
    return value


def _same_shape(value: Any, kind: Any) -> bool:
    if isinstance(value, Mapping):
        return kind is dict or dataclasses.is_dataclass(kind)
    if isinstance(value, (list, tuple)):
        return kind in (list, tuple)
    return False


_KINDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a mapping",
          list: "a list", tuple: "a list"}


def _deep_copy(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in values.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
