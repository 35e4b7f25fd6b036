"""What `model.pretrained` and `model.vae` *are*, for the settings fingerprint: a local folder by the digest of its
files' bytes, a hub id by the commit it resolves to.

- A local folder (any spelling: a trailing `/`, `./`, `~`, a symlink: its real path is what counts) is its files'
  digest (`data.model_digest`: hashed once, then cached by path, size and mtime). The path itself is not part of
  it: the same files moved or copied elsewhere are the same model; a fine-tune saved over the folder is another.
- A hub id is `org/name@<commit>`: a 40-hex `model.revision` is that commit; else, online, the hub's answer for
  the revision (`model_info`, one request bounded by HUB_REQUEST_TIMEOUT_S); offline, or when the hub does not
  answer, the commit the Hugging Face cache's `refs/<revision>` names (what `from_pretrained` would load). When
  neither is known the id and revision stand for the model, as before (a new commit on the hub then goes unnoticed),
  and a warning says so. A resolved commit is pinned: the run's config carries it as `model.revision`, so every
  edit actor loads that commit, whatever is pushed to the hub during the run.
- In `noop` mode no model loads: nothing is hashed or asked, a folder counts by its real path.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass

from diffedit_batch.config import Config
from diffedit_batch.data.model_digest import folder_digest

from .preflight import HubLookup, PreflightError, is_hub_id, lookup_hub_model

__all__ = ["ModelIdentities", "ModelIdentity", "identify_model", "identify_models"]

log = logging.getLogger(__name__)

_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class ModelIdentity:
    """One model setting, resolved: `key` (e.g. model.pretrained) and `value` as configured; `folder` (a local
    folder's real path) or `repo_id`; `digest` (a folder's) or `commit` (a hub id's, None when unknown); `source`
    says how it was resolved."""

    key: str
    value: str
    folder: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    digest: str | None = None
    commit: str | None = None
    source: str = "not resolved"

    @property
    def resolved(self) -> bool:
        return self.digest is not None or self.commit is not None

    @property
    def fingerprinted(self) -> str:
        """What the settings fingerprint holds for this model."""
        if self.digest is not None:
            return f"folder {self.digest}"
        if self.commit is not None:
            return f"{self.repo_id}@{self.commit}"
        return self.folder or self.value

    def describe(self) -> dict:
        """For the run file: the value as configured and what it resolved to."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}


@dataclass(frozen=True)
class ModelIdentities:
    """`model.pretrained` and `model.vae` (None when not set), resolved."""

    pretrained: ModelIdentity
    vae: ModelIdentity | None = None

    def settings(self) -> dict:
        """The model keys of the settings they replace: `pretrained` and `vae` by identity, `revision` folded into
        a resolved identity (kept only when the commit is unknown)."""
        return {"pretrained": self.pretrained.fingerprinted,
                "revision": None if self.pretrained.resolved else self.pretrained.revision,
                "vae": None if self.vae is None else self.vae.fingerprinted}

    def pinned(self, config: Config) -> Config:
        """`config` with `model.revision` set to the resolved commit of a hub id."""
        commit = self.pretrained.commit
        if commit is None or config.model.revision == commit:
            return config
        return dataclasses.replace(config, model=dataclasses.replace(config.model, revision=commit))

    def describe(self) -> dict:
        return {identity.key: identity.describe() for identity in (self.pretrained, self.vae) if identity}


def identify_models(config: Config, *, hub_lookup: HubLookup | None = None,
                    digest_cache: str | None = "default") -> ModelIdentities:
    """Resolve `model.pretrained` (with `model.revision`) and `model.vae` (see the module docstring); in `noop`
    mode only their spelling is normalised. Raises PreflightError when a folder's files cannot be read."""
    resolve = config.job.mode == "edit"
    model = config.model
    pretrained = identify_model("model.pretrained", model.pretrained, model.revision, resolve=resolve,
                                hub_lookup=hub_lookup, digest_cache=digest_cache)
    vae = None
    if model.vae is not None:
        vae = identify_model("model.vae", model.vae, None, resolve=resolve, hub_lookup=hub_lookup,
                             digest_cache=digest_cache)
    return ModelIdentities(pretrained, vae)


def identify_model(key: str, value: str, revision: str | None, *, resolve: bool = True,
                   hub_lookup: HubLookup | None = None, digest_cache: str | None = "default") -> ModelIdentity:
    """One model setting resolved (see the module docstring)."""
    path = os.path.expanduser(value)
    if os.path.exists(path) or not is_hub_id(value):
        folder = os.path.realpath(path)
        if key == "model.vae" and os.path.isdir(os.path.join(folder, "vae")):
            folder = os.path.join(folder, "vae")  # a pipeline folder: its vae/ is what loads
        if not resolve:
            return ModelIdentity(key, value, folder=folder)
        try:
            digest = folder_digest(folder, cache=digest_cache)
        except OSError as error:
            raise PreflightError(f"{key}: {value!r}: its files cannot be read to tell what model it is "
                                 f"({type(error).__name__}: {error}); fix their permissions") from None
        log.info("%s %s: %s (%d files, %.1f GiB, %.1f GiB hashed in %.1f s)", key, folder, digest.digest,
                 digest.files, digest.bytes / 2**30, digest.hashed_bytes / 2**30, digest.seconds)
        return ModelIdentity(key, value, folder=folder, digest=digest.digest,
                             source="files hashed" if digest.hashed_bytes else "digest cache")
    if not resolve:
        return ModelIdentity(key, value, repo_id=value, revision=revision)
    commit, source = _hub_commit(value, revision, hub_lookup or lookup_hub_model)
    if commit is None:
        log.warning("%s: %s: its commit is not known (the hub did not answer and the Hugging Face cache has no ref "
                    "%s); the settings hold the id and revision, so a new commit pushed under them goes unnoticed",
                    key, value, revision or "main")
    return ModelIdentity(key, value, repo_id=value, revision=revision, commit=commit, source=source)


def _hub_commit(repo_id: str, revision: str | None, hub_lookup: HubLookup) -> tuple[str | None, str]:
    """(the commit a hub id and revision resolve to, how it was found), or (None, "unresolved")."""
    from huggingface_hub import constants

    if revision is not None and _COMMIT.fullmatch(revision):
        return revision, "revision is a commit"
    if not constants.is_offline_mode():
        try:
            sha = getattr(hub_lookup(repo_id, revision), "sha", None)
        except Exception as error:  # noqa: BLE001 (no answer: the cache may know)
            log.info("the hub did not resolve %s: %s", repo_id, error)
            sha = None
        if sha:
            return sha, "hub"
    commit = cached_commit(repo_id, revision)
    return (commit, "Hugging Face cache") if commit else (None, "unresolved")


def cached_commit(repo_id: str, revision: str | None = None) -> str | None:
    """The commit the Hugging Face cache's `refs/<revision>` (default `main`) names for a model, or None."""
    from huggingface_hub import constants

    folder = os.path.join(constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"))
    try:
        with open(os.path.join(folder, "refs", revision or "main"), encoding="utf-8") as file:
            commit = file.read().strip()
    except (OSError, ValueError):
        return None
    return commit if _COMMIT.fullmatch(commit) else None
