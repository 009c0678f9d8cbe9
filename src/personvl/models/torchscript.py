"""Reading the weights of a TorchScript archive (OpenAI's released CLIP files) without running
it: ``torch.jit.load`` would compile and run the archive's code, and ``torch.load`` refuses such
archives with ``weights_only=True``.

An archive is a zip holding ``data.pkl`` (the module tree: objects of ``__torch__.*`` classes
whose attributes are submodules and tensors), one file per tensor storage under ``data/``, and
the classes' TorchScript source under ``code/``, where each class declares which of its tensor
attributes are parameters and buffers. The unpickler below builds only plain placeholders and
tensors; any other global in the pickle is refused.
"""

from __future__ import annotations

import collections
import pickle
import re
import zipfile
from pathlib import Path

import torch

from personvl.errors import PersonvlError

STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_CLASS_DECLARATION = re.compile(
    r"^class (\w+)\(Module\):\n  __parameters__ = \[(.*?)\]\n  __buffers__ = \[(.*?)\]", re.M)


def is_torchscript_archive(path: str | Path) -> bool:
    """A zip with ``code/`` and ``data.pkl`` entries under one root folder."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any("/code/" in name for name in names) and any(name.endswith("/data.pkl") for name in names)


class TorchScriptWeights:
    """``state_dict``: parameter and buffer tensors by dotted name, as ``module.state_dict()``
    of the scripted module would give them; ``class_names``: every TorchScript class declared."""

    def __init__(self, state_dict: dict[str, torch.Tensor], class_names: set[str]):
        self.state_dict = state_dict
        self.class_names = class_names


def read_torchscript_weights(path: str | Path) -> TorchScriptWeights:
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
            if not pickles:
                raise PersonvlError(f"{path} is not a TorchScript archive (no data.pkl)")
            root = pickles[0].split("/")[0]
            declarations = _class_declarations(archive, root, names)
            with archive.open(pickles[0]) as stream:
                tree = _ArchiveUnpickler(stream, archive, root).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, KeyError) as exc:
        raise PersonvlError(f"cannot read TorchScript archive {path}: {exc}") from None
    state: dict[str, torch.Tensor] = {}
    _collect(tree, "", declarations, state, path)
    return TorchScriptWeights(state, set(declarations))


def _class_declarations(archive: zipfile.ZipFile, root: str, names: list[str]) -> dict[str, tuple[set, set]]:
    declarations = {}
    prefix = f"{root}/code/"
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".py")):
            continue
        module = name[len(prefix):-len(".py")].replace("/", ".")
        source = archive.read(name).decode("utf-8", errors="replace")
        for class_name, parameters, buffers in _CLASS_DECLARATION.findall(source):
            declarations[f"{module}.{class_name}"] = (set(re.findall(r'"(\w+)"', parameters)),
                                                      set(re.findall(r'"(\w+)"', buffers)))
    return declarations


class _ScriptObject:
    """Stand-in for an object of a TorchScript class: keeps its attributes, runs nothing."""

    qualified_name = ""

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.qualified_name} has a custom state this reader does not support")
        self.attributes = state


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return torch.as_strided(storage, tuple(size), tuple(stride), storage_offset)


def _identity(value, *rest):
    return value


_ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "build_intlist"): _identity,
    ("torch.jit._pickle", "build_doublelist"): _identity,
    ("torch.jit._pickle", "build_boollist"): _identity,
    ("torch.jit._pickle", "build_tensorlist"): _identity,
    ("torch.jit._pickle", "restore_type_tag"): _identity,
}


class _ArchiveUnpickler(pickle.Unpickler):
    def __init__(self, stream, archive: zipfile.ZipFile, root: str):
        super().__init__(stream)
        self.archive = archive
        self.root = root
        self.classes: dict[str, type] = {}
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self.classes:
                self.classes[qualified] = type(name, (_ScriptObject,), {"qualified_name": qualified})
            return self.classes[qualified]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if key not in self.storages:
            data = bytearray(self.archive.read(f"{self.root}/data/{key}"))
            flat = torch.frombuffer(data, dtype=storage_type.dtype) if data else torch.empty(0, dtype=storage_type.dtype)
            if flat.numel() != numel:
                raise pickle.UnpicklingError(f"storage {key} holds {flat.numel()} values, expected {numel}")
            self.storages[key] = flat
        return self.storages[key]


def _collect(obj, prefix: str, declarations: dict, state: dict, path: Path) -> None:
    if not isinstance(obj, _ScriptObject):
        raise PersonvlError(f"{path}: the archive's top level is not a module")
    if obj.qualified_name not in declarations:
        raise PersonvlError(f"{path}: class {obj.qualified_name} is not declared in the archive's code")
    parameters, buffers = declarations[obj.qualified_name]
    for name, value in getattr(obj, "attributes", {}).items():
        if isinstance(value, _ScriptObject):
            _collect(value, f"{prefix}{name}.", declarations, state, path)
        elif isinstance(value, torch.Tensor) and (name in parameters or name in buffers):
            state[prefix + name] = value
