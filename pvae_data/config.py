"""Typed configs: every stage's options are a frozen dataclass saved next to its output."""

from __future__ import annotations

import typing
from dataclasses import MISSING, asdict, fields, is_dataclass
from pathlib import Path


class ConfigMixin:
    """``to_dict`` / ``from_dict`` for config dataclasses, nested ones included (a field typed
    as another ConfigMixin dataclass is written as a mapping and read back into that class);
    unknown keys are an error, not ignored.  Tuples are written as lists, so that every config
    dumps to YAML (``safe_dump``) and JSON alike."""

    def to_dict(self) -> dict:
        return _lists(asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        d = dict(d)
        for name, sub in _nested_configs(cls).items():
            if isinstance(d.get(name), dict):
                d[name] = sub.from_dict(d[name])
        return cls(**d)


def _lists(x):
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_lists(v) for v in x]
    return x


def _nested_configs(cls) -> dict[str, type]:
    """``{field name: ConfigMixin dataclass}`` for the fields of ``cls`` that hold another config."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)
            if isinstance(hints.get(f.name), type) and is_dataclass(hints[f.name])
            and issubclass(hints[f.name], ConfigMixin)}


def check_field_types(obj) -> None:
    """Raise ``ValueError`` naming the field when a value does not have its default's type, so a
    YAML or ``--set`` typo (``epochs: abc``) fails with one line instead of deep in the code.
    Ints are accepted for floats; lists and tuples for each other; ``None`` defaults accept anything."""
    for f in fields(obj):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)  # type: ignore[misc]
        value = getattr(obj, f.name)
        if default is None or value is None:
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, (list, tuple)):
            ok = isinstance(value, (list, tuple))
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            raise ValueError(f"{type(obj).__name__}.{f.name}: expected {type(default).__name__}, "
                             f"got {value!r} ({type(value).__name__})")


def read_config_file(path: str | Path | None) -> dict:
    """A config file, YAML or JSON (YAML reads both); ``{}`` when ``path`` is None.  A file that
    is not a mapping is a ``ValueError`` naming it.  Both CLIs' ``--config`` read through here."""
    if path is None:
        return {}
    import yaml

    try:
        d = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not YAML/JSON ({e})") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping of config fields")
    return d


def parse_set(items) -> dict:
    """``("epochs=3", "pvae.beta=0")`` (``--set`` on either CLI) to ``{"epochs": 3, "pvae.beta": 0}``;
    values are read as YAML scalars/lists."""
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def apply_overrides(d: dict, overrides: dict | None) -> dict:
    """``{"epochs": 3, "pvae.beta": 0}``-style dotted overrides applied (in place) to a nested
    config dict, which is returned."""
    for key, value in (overrides or {}).items():
        cur = d
        *parents, last = key.split(".")
        for p in parents:
            cur = cur.setdefault(p, {})
        cur[last] = value
    return d
