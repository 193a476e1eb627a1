"""Experiment configs: YAML loading, ``key=value`` overrides, an allow-listed registry.

One YAML file describes a whole experiment, in the taming-transformers layout::

    model:     {target: vqgan, params: {...}}
    data:      {target: rawrgb, params: {...}}
    lightning: {trainer: {...}}

``target`` names a class registered with :func:`register`; a config can never import
an arbitrary dotted path.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import yaml

# Modules whose classes may be named by a config; importing them fills the registry.
_REGISTRY_MODULES = (
    "rawdiff.models.vqgan",
    "rawdiff.models.ldm",
    "rawdiff.models.distill",
    "rawdiff.data.dataset",
)
_REGISTRY: Dict[str, Callable] = {}


def register(name: str) -> Callable:
    """Class decorator: make ``cls`` available to configs as ``target: name``."""

    def wrap(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError("target %r is registered twice" % name)
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_registry() -> None:
    for module in _REGISTRY_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real import error inside the module
                raise


def registered() -> Dict[str, Callable]:
    _load_registry()
    return dict(_REGISTRY)


def get_target(name: str) -> Callable:
    targets = registered()
    if name not in targets:
        raise ValueError("unknown target %r; known: %s" % (name, ", ".join(sorted(targets))))
    return targets[name]


def instantiate(node: Dict[str, Any], **extra) -> Any:
    """Build ``node["target"](**node["params"], **extra)`` from the allow-list."""
    if not isinstance(node, dict) or "target" not in node:
        raise ValueError("config node needs a 'target' key, got %r" % (node,))
    params = dict(node.get("params") or {})
    params.update(extra)
    return get_target(node["target"])(**params)


def load_config(path: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except FileNotFoundError:
        raise FileNotFoundError("config file %s does not exist" % path) from None
    except yaml.YAMLError as exc:
        raise ValueError("config %s is not valid YAML: %s" % (path, exc)) from None
    if not isinstance(cfg, dict):
        raise ValueError("config %s must be a mapping at the top level" % path)
    return cfg


def merge(base: Dict[str, Any], other: Dict[str, Any]) -> Dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in ``other`` replaces."""
    out = copy.deepcopy(base)
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_value(raw: str) -> Any:
    """YAML scalar, with the YAML 1.1 gap closed: ``1e-4`` is a float, not a string."""
    if not raw.strip():
        return ""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(cfg: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    """Apply ``a.b.c=value`` strings; values are parsed as YAML (``1e-4``, ``[1,2]``, ``true``)."""
    out = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError("override %r is not of the form key=value" % item)
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ValueError("override %r has an empty key" % item)
        value = _parse_value(raw)
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError("override %r: %s is not a mapping" % (item, part))
            node = child
        node[parts[-1]] = value
    return out


#: the sections every experiment has (``lightning`` is optional)
EXPERIMENT_SECTIONS = ("model", "data")


def load_configs(paths: Iterable[str], overrides: Optional[Iterable[str]] = None,
                 sections: Sequence[str] = EXPERIMENT_SECTIONS) -> Dict[str, Any]:
    """One experiment: config files merged left to right, then ``key=value`` overrides.

    A later file may hold only what it changes; the merged config must have each of
    ``sections`` as a mapping, else ValueError naming the files and the section.
    """
    paths = list(paths)
    cfg: Dict[str, Any] = {}
    for path in paths:
        cfg = merge(cfg, load_config(path))
    cfg = apply_overrides(cfg, overrides or ())
    for name in sections:
        if name not in cfg:
            raise ValueError("config %s has no %r section (an experiment needs %s, each {target, params})"
                             % (" + ".join(paths), name, " and ".join(repr(s) for s in sections)))
        if not isinstance(cfg[name], dict):
            raise ValueError("config %s: section %r must be a mapping {target, params}, got %r"
                             % (" + ".join(paths), name, cfg[name]))
    return cfg


def save_config(cfg: Dict[str, Any], path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
