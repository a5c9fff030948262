"""Typed configs: every stage's options are a frozen dataclass saved next to its output."""

from __future__ import annotations

import math
import typing
from dataclasses import MISSING, asdict, fields, is_dataclass
from pathlib import Path


class ConfigMixin:
    """``to_dict`` / ``from_dict`` for config dataclasses, nested ones included (a field typed
    as another ConfigMixin dataclass is written as a mapping and read back into that class);
    unknown keys are an error, not ignored.  Tuples are written as lists, so that every config
    dumps to YAML (``safe_dump``) and JSON alike.

    An experiment that was not kept leaves the library: its field goes into ``retired``
    (``{name: neutral value}``), and an old run's config that names it at that value still loads
    (the key is dropped); one that used it is refused by name, pointing at ``retired_note`` (where
    the study and the code that had it are).  ``key_prefix`` is how the config is spelled inside
    its parent (``pvae.``)."""

    retired: typing.ClassVar[dict] = {}
    retired_note: typing.ClassVar[str] = ""
    key_prefix: typing.ClassVar[str] = ""

    def to_dict(self) -> dict:
        return _lists(asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        for name, neutral in cls.retired.items():
            if name in d and d.pop(name) != neutral:
                raise ValueError(f"{cls.key_prefix}{name}: an experiment that was not kept and left the library "
                                 f"({cls.retired_note})")
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
    Ints are accepted for floats; lists and tuples for each other; ``None`` defaults accept anything.
    Floats must be finite (``lr: .inf`` or ``dither: .nan`` are refused here, not found as NaN later)."""
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
        if isinstance(default, float) and not math.isfinite(value):  # .inf / .nan from YAML
            raise ValueError(f"{type(obj).__name__}.{f.name}: must be a finite number, got {value!r}")


MAX_CONFIG_BYTES = 1 << 20  # a config is a page of options; anything larger is not one


def load_yaml(text: str, source: str = "<string>"):
    """YAML (or JSON) read as data, strictly: no aliases (an alias bomb -- "billion laughs" -- would
    expand without bound; a config never needs one) and no duplicate keys (YAML would silently keep
    the last).  Errors are ``ValueError`` naming ``source`` and the line."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                ev = self.peek_event()
                raise yaml.composer.ComposerError(None, None, f"alias *{ev.anchor} is not allowed in a config",
                                                  ev.start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error follows
                if dup:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    if len(text) > MAX_CONFIG_BYTES:
        raise ValueError(f"{source}: {len(text)} bytes; a config is at most {MAX_CONFIG_BYTES}")
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{source}:{line} not a valid config ({what})") from None


def read_config_file(path: str | Path | None) -> dict:
    """A config file, YAML or JSON (YAML reads both); ``{}`` when ``path`` is None.  A file that
    is not a mapping is a ``ValueError`` naming it.  Both CLIs' ``--config`` read through here."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    d = load_yaml(text, str(path))
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping of config fields")
    return d


def parse_set(items) -> dict:
    """``("epochs=3", "pvae.beta=0")`` (``--set`` on either CLI) to ``{"epochs": 3, "pvae.beta": 0}``;
    values are read as YAML scalars/lists."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        if k.strip() in out:
            raise ValueError(f"--set: {k.strip()} given twice")
        out[k.strip()] = load_yaml(v, f"--set {k.strip()}")
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


def merge_config(path, sets: dict | None = None, flags: dict | None = None) -> dict:
    """The one merge rule of both CLIs (``pvae-data`` and ``pvae-model``): the dataclass's
    defaults < the ``--config`` FILE < ``--set a.b=v`` < the command's own flags, where a flag
    counts only when given (its default is None).  Returns the merged dict for ``from_dict``."""
    return apply_overrides(apply_overrides(read_config_file(path), sets), flags)


def changed_fields(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``["pvae.beta: 100.0 -> 50.0", ...]``: the dotted fields whose values differ between two
    config dicts (what ``--resume`` names when a run's saved config and the new one disagree)."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_fields(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out
