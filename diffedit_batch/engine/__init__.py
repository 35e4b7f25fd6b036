"""The DiffEdit engine: pure torch and diffusers, no Ray, files or config.

`EditSettings` imports without torch; the engine itself loads torch and diffusers on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .settings import EditSettings

__all__ = ["DiffEditEngine", "EditResult", "EditSettings", "EngineStats"]

if TYPE_CHECKING:
    from .engine import DiffEditEngine, EditResult, EngineStats


def __getattr__(name: str):
    if name in ("DiffEditEngine", "EditResult", "EngineStats"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'diffedit_batch.engine' has no attribute {name!r}")
