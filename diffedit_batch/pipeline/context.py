"""A run's context: what the run decides once, at the door, before its lease, and reads everywhere after.

The config's model family and model identities (`model_identity`), the settings fingerprints they give, the
storage options, the output prefix as written: resolved here once, so the preflight, the plan and the run files
read one answer instead of each asking the config (and the model folder, and the hub) again.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffedit_batch.config import Config
from diffedit_batch.config.fingerprint import RunSettings, run_settings
from diffedit_batch.data.storage import StorageOptions

from .model_identity import ModelIdentities, identify_models
from .planning import settings_policies
from .preflight import HubLookup, resolve_model_family

__all__ = ["RunContext", "open_run"]


@dataclass(frozen=True)
class RunContext:
    """What a run reads instead of asking its config again.

    `config`: the config with `model.family` resolved and `model.revision` pinned to the commit a hub id resolved
    to; `output_prefix` without a trailing `/`; `options`: the storage options; `models`: what `model.pretrained`
    and `model.vae` are; `settings`: the settings fingerprints of the run's edits; `on_settings_change`: None,
    `redo` or `keep`."""

    config: Config
    manifest_uri: str
    output_prefix: str
    options: StorageOptions
    models: ModelIdentities
    settings: RunSettings
    on_settings_change: str | None = None


def open_run(config: Config, manifest_uri: str, output_prefix: str, on_settings_change: str | None = None, *,
             hub_lookup: HubLookup | None = None, digest_cache: str | None = "default") -> RunContext:
    """Resolve a run's context (see RunContext). Raises ValueError for a wrong `on_settings_change`, PreflightError
    for a model whose family or files cannot be read. Reads no manifest and writes nothing but the digest cache."""
    settings_policies(on_settings_change)  # a wrong value is the caller's error, before anything starts
    config = resolve_model_family(config)  # SD or SDXL: the aspect buckets and the settings depend on it
    models = identify_models(config, hub_lookup=hub_lookup, digest_cache=digest_cache)
    config = models.pinned(config)
    return RunContext(config=config, manifest_uri=manifest_uri,
                      output_prefix=output_prefix.rstrip("/") or output_prefix, options=config.storage, models=models, settings=run_settings(config, models.settings()),
                      on_settings_change=on_settings_change)
