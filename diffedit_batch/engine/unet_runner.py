"""The denoiser runner's former home: `UNetRunner` is `denoiser_runner.DenoiserRunner`."""

from .denoiser_runner import DenoiserRunner, UNetRunner, call_unet

__all__ = ["DenoiserRunner", "UNetRunner", "call_unet"]
