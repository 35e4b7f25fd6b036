"""diffedit-batch: DiffEdit image editing at dataset scale.

The engine is imported lazily, so the data layer and the CLI start without loading torch and diffusers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .redaction import install_log_redaction

__all__ = ["DiffEditEngine", "EditResult", "EditSettings"]
__version__ = "0.1.0"

install_log_redaction()  # no credential inside a URI reaches a log, in the driver or in a Ray worker

if TYPE_CHECKING:
    from .engine import DiffEditEngine, EditResult, EditSettings


def __getattr__(name: str):
    if name in __all__:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'diffedit_batch' has no attribute {name!r}")
