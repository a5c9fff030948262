"""Typed configs: every stage's options are a frozen dataclass saved next to its output."""

from __future__ import annotations

from dataclasses import MISSING, asdict, fields


class ConfigMixin:
    """``to_dict`` / ``from_dict`` for config dataclasses; unknown keys are an error, not ignored."""

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**d)


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
