"""Typed configs: every stage's options are a frozen dataclass saved next to its output."""

from __future__ import annotations

from dataclasses import asdict, fields


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
