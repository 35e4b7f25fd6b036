"""The DiffEdit engine: pure torch and diffusers, no Ray, files or config."""

from .engine import DiffEditEngine, EditResult, EngineStats
from .settings import EditSettings

__all__ = ["DiffEditEngine", "EditResult", "EditSettings", "EngineStats"]
