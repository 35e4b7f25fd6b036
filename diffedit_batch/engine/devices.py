"""Where models run and in what precision: the one place device and dtype names are read.

The names (`DEVICE_PATTERN`, `DTYPE_NAMES`) import without torch, so the config validates them at the door; the
resolvers turn them into torch objects where a model is loaded (the engine and the recipe helpers).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
"""A device name: `auto` (CUDA when available, else the CPU), `cpu`, `cuda` or `cuda:N`."""

DTYPE_NAMES = ("auto", "float32", "float16", "bfloat16")
"""Precision names; `auto` lets each loader choose (e.g. float16 on CUDA, float32 on the CPU)."""


def check_device_name(name: str) -> str:
    """`name` if it is a device name (see `DEVICE_PATTERN`); ValueError otherwise."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def check_dtype_name(name: str) -> str:
    """`name` if it is one of `DTYPE_NAMES`; ValueError otherwise."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    return name


def resolve_device(device: "str | torch.device | None") -> "torch.device":
    """A torch device; None or "auto" is CUDA when available, else the CPU. Asking for CUDA without it is an error."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str):
        check_device_name(device)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for, but CUDA is not available")
    return device


def resolve_dtype(dtype: "torch.dtype | str | None", device: "torch.device", *, auto: "torch.dtype | None" = None):
    """A torch dtype; None or "auto" is `auto` when given, else float16 on CUDA and float32 on the CPU."""
    import torch

    if dtype is None or dtype == "auto":
        if auto is not None:
            return auto
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    check_dtype_name(dtype)
    return getattr(torch, dtype)
