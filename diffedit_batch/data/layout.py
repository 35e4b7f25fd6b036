"""Every path under a job's output prefix, in one place.

    PREFIX/images/<key>.png              edited images (output format `files`; <key>.<run_id>.png when redone)
    PREFIX/masks/<key>.png               their DiffEdit masks
    PREFIX/shards/<name>.tar|.parquet    edits, masks and sources in shards (output formats webdataset, parquet)
    PREFIX/manifest/**/*.parquet         the result manifest: one record per edit
    PREFIX/runs/<run_id>.json            each run's config, start and end, counts
    PREFIX/concepts/<run_id>.parquet     the Flan-T5 captions of each concept a run used
    PREFIX/_work/<run_id>/               a run's work list and plan, while it runs (removed at its end)
    PREFIX/lease.json                    the run lease: which run writes under the prefix now (data/lease.py)
    PREFIX/report/                       the HTML report (`diffedit-batch report`)
    PREFIX/export/                       the training export (`diffedit-batch export`)

`<key>` is `storage.output_key(edit_id)`: safe characters plus a hash, so no id can escape the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from .storage import join, output_key

__all__ = ["OutputLayout", "layout_reference_markdown"]


def layout_reference_markdown() -> str:
    """The tree of this module's docstring as a Markdown block, for docs/reference/outputs.md."""
    tree = [line.strip() for line in __doc__.splitlines() if line.startswith("    PREFIX/")]
    return "```text\n" + "\n".join(tree) + "\n```\n"


@dataclass(frozen=True)
class OutputLayout:
    """The URIs of a job's outputs under `prefix` (local folder, `s3://` or `gs://`)."""

    prefix: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", self.prefix.rstrip("/") or self.prefix)

    # --- per edit ---------------------------------------------------------------------------------

    def image(self, edit_id: str, tag: str | None = None) -> str:
        """`PREFIX/images/<key>.png`: the edited image of `edit_id`; `<key>.<tag>.png` for an edit that replaces an
        earlier one (`tag`: the run's id), so the earlier record names its own pixels until it is removed."""
        return join(self.prefix, "images", output_key(edit_id) + (f".{tag}" if tag else "") + ".png")

    def mask(self, edit_id: str, tag: str | None = None) -> str:
        """`PREFIX/masks/<key>.png`: the mask of `edit_id` (`<key>.<tag>.png`: see `image`)."""
        return join(self.prefix, "masks", output_key(edit_id) + (f".{tag}" if tag else "") + ".png")

    @property
    def shards(self) -> str:
        """`PREFIX/shards`: the shards of the webdataset and parquet output formats."""
        return join(self.prefix, "shards")

    def shard(self, name: str, extension: str) -> str:
        """`PREFIX/shards/<name>.<extension>`."""
        return join(self.shards, f"{name}.{extension}")

    # --- the result manifest and run files --------------------------------------------------------

    @property
    def records(self) -> str:
        """`PREFIX/manifest`: the folder of result record files (one Parquet dataset)."""
        return join(self.prefix, "manifest")

    def record_part(self, name: str) -> str:
        """`PREFIX/manifest/part-<name>.parquet`."""
        return join(self.records, f"part-{name}.parquet")

    @property
    def runs(self) -> str:
        """`PREFIX/runs`: one JSON file per run."""
        return join(self.prefix, "runs")

    def run_file(self, run_id: str) -> str:
        """`PREFIX/runs/<run_id>.json`."""
        return join(self.runs, f"{run_id}.json")

    def concepts_file(self, run_id: str) -> str:
        """`PREFIX/concepts/<run_id>.parquet`: the concept captions a run generated."""
        return join(self.prefix, "concepts", f"{run_id}.parquet")

    # --- a run's scratch space ----------------------------------------------------------------------

    @property
    def work(self) -> str:
        """`PREFIX/_work`: each run's work list while it runs. The `_` keeps it out of every reader's way."""
        return join(self.prefix, "_work")

    def work_folder(self, run_id: str) -> str:
        """`PREFIX/_work/<run_id>`."""
        return join(self.work, run_id)

    def work_file(self, run_id: str, name: str) -> str:
        """`PREFIX/_work/<run_id>/<name>.parquet`."""
        return join(self.work_folder(run_id), f"{name}.parquet")

    @property
    def lease(self) -> str:
        """`PREFIX/lease.json`: the lease of the run that writes under the prefix now."""
        return join(self.prefix, "lease.json")

    # --- derived outputs --------------------------------------------------------------------------

    @property
    def report(self) -> str:
        """`PREFIX/report`: the HTML report's default folder."""
        return join(self.prefix, "report")

    @property
    def export(self) -> str:
        """`PREFIX/export`: the training export's default folder."""
        return join(self.prefix, "export")
