"""diffedit-batch: DiffEdit image editing at dataset scale."""

from .engine import DiffEditEngine, EditResult, EditSettings

__all__ = ["DiffEditEngine", "EditResult", "EditSettings"]
__version__ = "0.1.0"
