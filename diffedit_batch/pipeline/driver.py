"""Running the job: check the manifest, connect to Ray, plan, stream the edit pass, compact, write the run files."""

from __future__ import annotations

import _thread
import contextlib
import datetime as dt
import logging
import posixpath
import signal
import socket
import threading
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from diffedit_batch.config import Config
from diffedit_batch.data.compaction import compact_records
from diffedit_batch.data.layout import OutputLayout
from diffedit_batch.data.lease import acquire_lease
from diffedit_batch.data.inputs import inspect_input
from diffedit_batch.data.manifest import ManifestError
from diffedit_batch.data.records import list_record_files
from diffedit_batch.data.status import ErrorClass
from diffedit_batch.config.fingerprint import RunSettings
from diffedit_batch.data.run_metadata import (
    delete_run_metadata,
    new_run_id,
    read_run_metadata,
    settings_described,
    write_run_metadata,
)
from diffedit_batch.data.storage import (
    StorageError,
    delete,
    delete_folder,
    list_files,
    redact_uri,
    write_bytes_atomic,
)
from diffedit_batch.redaction import redact_text, redact_values

from .connection import connect
from .task_errors import one_line, original_error, task_message
from .placement import check_placement
from .plan import edit_pass, edit_pass_stages, generate_concept_captions
from .planning import SETTINGS_ADVICE, RunPlan, SettingsChanged, plan_run, settings_change_message
from .context import RunContext, open_run
from .preflight import check_devices, check_manifest_columns, check_models
from .progress import ProgressReporter
from .reselect import apply_reselection
from .stopped import clean_up_stopped_run, remove_empty_work_root, remove_settled_records
from .stages.read import embedded_spans
from .summary import JobSummary
from .supersede import remove_superseded

log = logging.getLogger("diffedit_batch.job")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM (or a lost lease, delivered as SIGINT): the run stops where it is, records what it finished
    and says so."""


class _StopSignals:
    """SIGINT and SIGTERM raise Interrupted in the main thread while the run works (`armed`); once it is winding
    down (compaction done, lease and run file to settle) a signal is only noted, so the clean-up always finishes.
    Installed over whatever handlers were there (Ray's driver handler would `sys.exit`; an ignored SIGINT would make
    a lost lease unable to stop the run) and restored after."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.armed = True
        self.deferred: str | None = None

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.armed:
            raise Interrupted(name)
        self.deferred = name

    def install(self) -> None:
        """(Re)install the handlers: again after `ray.init`, which installs its own."""
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                signal.signal(signum, self._handle)

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.getsignal(signum) for signum in self.SIGNALS}
        self.install()
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def run_job(config: Config, manifest_uri: str, output_prefix: str, address: str | None = None,
            break_lease: bool = False, verbose: bool = False, on_settings_change: str | None = None) -> JobSummary:
    """Edit every row of the manifest at `manifest_uri`, writing under `output_prefix`.

    Before any work: raises ManifestError when the manifest's schema is wrong, LeaseHeld when another live run
    holds the output (LeaseError when its lease cannot be taken, LeaseStorageError when the storage failed), and JobSetupError when the stages cannot be
    placed. Row failures become records. A storage failure of the run's own files (its plan, records, run file:
    a full disk, a lost bucket) ends the run with `summary.status == "failed"` and `summary.error` set, not an
    exception. SIGINT or SIGTERM raise KeyboardInterrupt after the run file says `interrupted`. Re-running on the
    same output skips edits recorded ok for the same request under the same settings and does the rest; when edits
    were recorded ok under other settings it raises SettingsChanged before any work (leaving no trace) unless
    `on_settings_change` is `redo` or `keep`. `verbose`: Ray's own console output too.
    """
    # Once, at the door: the model's family and identity, the settings fingerprints, the storage options.
    context = open_run(config, manifest_uri, output_prefix, on_settings_change)
    stop = _StopSignals()
    with stop.installed():
        return _run_under_lease(context, address, break_lease, verbose, stop)


def _run_under_lease(context: RunContext, address: str | None, break_lease: bool, verbose: bool,
                     stop: _StopSignals) -> JobSummary:
    config, options, output_prefix = context.config, context.options, context.output_prefix
    manifest = inspect_input(context.manifest_uri, config.input, options,
                             templated_targets=bool(config.prompts.targets))
    # Before any work: every column the templates, augment and regions name must be in the manifest.
    check_manifest_columns(config, manifest.schema.names)
    class_names = manifest.spec.class_names
    run_id = new_run_id()
    summary = JobSummary(run_id=run_id)
    metadata = {"run_id": run_id, "status": "running", "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "host": socket.gethostname(), "manifest": redact_uri(context.manifest_uri),
                # its format, carried columns and their features (a ClassLabel's names): what the exports give back
                "input": manifest.spec.describe(),
                "config": redact_values(config.to_dict()),
                # what the model settings resolved to: a folder's files' digest, a hub id's commit
                "models": redact_values(context.models.describe()),
                # the settings behind the settings fingerprints this run's records carry
                "settings": redact_values(context.settings.settings),
                "on_settings_change": context.on_settings_change}
    run_file_written = False
    lease = None

    def write_run_file() -> None:
        nonlocal run_file_written
        write_run_metadata(output_prefix, metadata, options)
        run_file_written = True

    started = time.perf_counter()
    try:
        # A lost lease (another run may take the output over) stops this run where it is, as an interrupt does, so
        # the two never write the same edits; the run then ends "failed" with the reason.
        lease = acquire_lease(output_prefix, run_id, options, config.job.lease_timeout_s, break_lease=break_lease,
                              on_lost=lambda message: _thread.interrupt_main(signal.SIGINT))
        elastic = connect(address, verbose=verbose, timeout_s=config.job.connect_timeout_s)
        stop.install()  # over the handler ray.init installed
        _run(context, manifest, run_id, elastic, summary, metadata["manifest"], write_run_file, class_names,
             stop=stop, lease=lease)
        stop.armed = False
        summary.status = "done"
        if summary.unrecorded:  # a full disk fails the run, whatever job.max_failed_fraction tolerates
            summary.status, summary.error = "failed", redact_text(one_line(
                f"{summary.unrecorded} edit(s) could not be recorded ({summary.unrecorded_error or 'storage error'})"))
    except SettingsChanged as refused:
        # Refused before any work: nothing of this run stays, its run file included.
        stop.armed = False
        summary.status, summary.error = "refused", str(refused)
        if run_file_written:
            delete_run_metadata(output_prefix, run_id, options)
            run_file_written = False
        raise
    except KeyboardInterrupt as interrupt:
        stop.armed = False
        if lease is not None and lease.lost:  # our own lease watch stopped the run
            summary.status, summary.error = "failed", f"{lease.lost}; this run stopped"
        else:
            summary.status = "interrupted"
            interrupt.summary = summary  # what the run had counted, for the caller's last line
            raise
    except Exception as error:  # the caller reports it; the run file says the run failed and why
        stop.armed = False
        # A Ray task's error arrives wrapped (its class derived from the original's too), its text a remote traceback:
        # what it means is the error inside. A manifest file that cannot be read is bad input; the run's own files
        # (its plan, records, run file) failing to write fail the run, with its summary.
        cause = original_error(error, (ManifestError, StorageError))
        if isinstance(cause, StorageError):
            summary.status, summary.error = "failed", redact_text(task_message(cause))
            # The edits the plan left to do that did not end here were not recorded: failed, as
            # docs/guides/operations.md says.
            unrecorded = max(0, summary.pending - summary.tallied)
            summary.failed += unrecorded
            if unrecorded:
                summary.error_classes[ErrorClass.STORAGE] += unrecorded
            log.error("run %s failed: %s", run_id, summary.error)
        elif isinstance(cause, ManifestError):
            cause = ManifestError(task_message(cause))
            summary.status, summary.error = "failed", redact_text(f"ManifestError: {cause}")
            raise cause from None
        else:
            summary.status, summary.error = "failed", redact_text(one_line(f"{type(error).__name__}: {error}"))
            raise
    finally:
        stop.armed = False
        summary.seconds = time.perf_counter() - started
        if lease is not None:
            lease.release()
            if lease.lost and summary.status == "done":  # lost as the run ended
                summary.status, summary.error = "failed", lease.lost
            elif lease.unwritable and summary.status == "done":  # its last renewals failed: a full disk
                summary.status, summary.error = "failed", redact_text(one_line(
                    f"the run lease could not be written ({lease.unwritable})"))
        metadata.update(status=summary.status, error=summary.error,
                        finished_at=dt.datetime.now(dt.timezone.utc).isoformat(), seconds=summary.seconds,
                        ok=summary.ok, filtered=summary.filtered, failed=summary.failed,
                        duplicates=summary.duplicates, skipped=summary.skipped,
                        changed=summary.changed, sources_changed=summary.sources_changed,
                        reselected=summary.reselected,
                        unverified_sources=summary.unverified, settings_redone=summary.settings_redone,
                        settings_kept=summary.settings_kept, unknown_settings=summary.unknown_settings,
                        engine=summary.engine, fetch_cpu_s=summary.fetch_cpu_s, write_cpu_s=summary.write_cpu_s)
        try:
            if run_file_written:  # else the run stopped before any work (a config that cannot be placed)
                write_run_file()
        except StorageError as error:  # e.g. the disk is still full: the summary line still reaches the operator
            log.error("could not write the run file of run %s: %s", run_id, error)
            if summary.status == "done":  # a run whose run file says `running` did not end well
                summary.status, summary.error = "failed", redact_text(one_line(
                    f"the run file could not be written ({error})"))
        if stop.deferred:
            log.warning("%s arrived as run %s was ending: it ended as %s", stop.deferred, run_id, summary.status)
    return summary


def _run(context: RunContext, manifest, run_id: str, elastic: bool, summary: JobSummary, manifest_label: str,
         write_run_file: Callable[[], None], class_names: dict[str, list[str]] | None = None, stop: _StopSignals | None = None,
         lease=None) -> None:
    """The run under its lease: plan, edit pass, compaction, clean-up. The run file is first written once the
    stages are known to fit: a run that cannot be placed leaves nothing behind; nor does one refused for a change
    of settings (SettingsChanged)."""
    config, options, output_prefix = context.config, context.options, context.output_prefix
    settings, on_settings_change = context.settings, context.on_settings_change
    # Before anything is written: the stages this config runs whatever the manifest holds (captions when the config
    # asks for every picture); the exact list is checked again once the plan says what the rows need.
    check_placement(edit_pass_stages(config, output_prefix, run_id,
                                     caption_images=config.captions.caption_inversion), elastic)
    write_run_file()
    # Work folders of earlier runs: they died (this run holds the lease), and their plans are stale.
    delete_folder(OutputLayout(output_prefix).work, options)
    earlier = list_record_files(output_prefix, options)
    shards = list_files(OutputLayout(output_prefix).shards, None, options)
    log.info("run %s: %d manifest file(s), %d rows, from %s -> %s; %d earlier record file(s)", run_id,
             len(manifest.files), manifest.rows, manifest_label, redact_uri(output_prefix), len(earlier.live))
    started = time.perf_counter()
    with ProgressReporter(summary, config.job.progress_interval_s):
        plan = plan_run(config, manifest, earlier.live, output_prefix, run_id, with_shards=bool(shards),
                        settings=settings, on_settings_change=on_settings_change, class_names=class_names)
        _settle_settings(plan, settings, on_settings_change, output_prefix, run_id, options)
        _remove_orphan_shards(shards, plan, options)
        # What the plan settled itself (records outlived by another, errors of done edits, duplicates recorded
        # again) goes now, before any edit: an earlier run that stopped left no second record of an edit behind.
        remove_settled_records(output_prefix, options, plan)
        if plan.reselected_files:  # a new candidate selection: verdicts changed in place, nothing edited again
            changed = apply_reselection(plan.reselected_files, list_record_files(output_prefix, options).live,
                                        options)
            log.info("candidates of %d done request(s) selected again from their recorded scores: %d record(s) "
                     "changed", plan.reselected, changed)
        summary.add_plan(plan, on_settings_change, candidates=config.candidates.count)
        summary.planned_s = time.perf_counter() - started
        log.info("plan: %d edits to do, %d done earlier, %d changed (%d pictures changed), %d invalid, %d duplicates "
                 "(%d buckets in %d partitions, about %.0f MiB of plan rows, %.1f s)", plan.pending, plan.skipped,
                 plan.changed, plan.sources_changed, plan.invalid, plan.duplicates, plan.buckets, plan.partitions,
                 plan.estimated_bytes / 2**20, summary.planned_s)
        if plan.unverified:
            log.info("%d done edit(s) have records from before records held their picture's identity: kept as done "
                     "without checking their pictures", plan.unverified)
        concepts = plan.concepts if config.job.mode == "edit" else []
        # The helper models the rows turned out to need, checked before an actor tries to load them.
        needs = dict(stable_diffusion=False, clip=False, concepts=bool(concepts),
                     captions=plan.captions_needed > 0 and not config.captions.caption_inversion)
        check_models(config, **needs)
        check_devices(config, local=not elastic, **needs)
        concept_captions = _concept_captions(config, concepts, output_prefix, run_id)
        stages = edit_pass_stages(config, output_prefix, run_id, caption_images=plan.captions_needed > 0,
                                  concept_captions=concept_captions, label_classes=plan.classes,
                                  input_spec=manifest.spec, work_files=plan.work_files)
        check_placement(stages, elastic)
        if plan.work_files:
            spans = embedded_spans(manifest, options) if manifest.spec.embedded else None
            batches = iter(edit_pass(stages, plan.work_files, config, spans).iter_batches(batch_format="pyarrow",
                                                                                           batch_size=None))
            try:
                for batch in batches:
                    summary.tally(batch)
            except BaseException:
                # Stopped early (a signal, a failure): Ray Data shuts its executor down now, its actors killed,
                # rather than whenever the generator is collected, so none of them writes after the lease is let go.
                batches.close()
                if stop is not None:
                    stop.armed = False  # the clean-up finishes whatever arrives now
                if lease is None or not lease.lost:  # a lost lease: another run may write here already
                    clean_up_stopped_run(config, output_prefix, run_id, plan, summary)
                raise
            batches.close()
    compaction = compact_records(output_prefix, options, records_per_file=config.job.records_per_file,
                                 superseded=remove_superseded(plan.superseded_files, options, pending=True),
                                 run_id=run_id)
    summary.record_files = compaction.files_after
    delete_folder(OutputLayout(output_prefix).work_folder(run_id), options)
    remove_empty_work_root(output_prefix, options)


def _settle_settings(plan: RunPlan, settings: RunSettings, on_settings_change: str | None, output_prefix: str,
                     run_id: str, options) -> None:
    """Say what becomes of edits made under other or unknown settings; raise SettingsChanged (after removing what
    the plan wrote) when settings changed and the run was not told what to do."""
    if plan.unknown_settings:
        log.warning("%d edit(s) were recorded ok before records carried fingerprints (unknown settings and request): "
                    "%s", plan.unknown_settings,
                    "edited again (--on-settings-change redo)" if on_settings_change == "redo" else
                    "kept as done; --on-settings-change redo edits them again")
    if not plan.settings_changed:
        return
    message = settings_change_message(plan, settings, settings_described(read_run_metadata(output_prefix, options)))
    if on_settings_change is None:
        for uri in plan.record_files:
            delete(uri, options)
        delete_folder(OutputLayout(output_prefix).work_folder(run_id), options)
        remove_empty_work_root(output_prefix, options)
        raise SettingsChanged(f"{message}; {SETTINGS_ADVICE}")
    log.warning("%s: %s", message, "edited again (--on-settings-change redo)" if on_settings_change == "redo"
                else "kept (--on-settings-change keep)")


def _remove_orphan_shards(shards: list[str], plan: RunPlan, options) -> None:
    """Delete the shards that existed before this run and that no record names: a run died between writing them
    and their records (their edits are in this run's work list again)."""
    if not plan.buckets:
        return  # nothing was planned: the records were not read
    orphans = [uri for uri in shards if posixpath.basename(uri) not in plan.shards]
    for uri in orphans:
        delete(uri, options)
    if orphans:
        log.info("removed %d shard(s) that no record names (left by a run that stopped)", len(orphans))


def _concept_captions(config: Config, concepts: list[str], output_prefix: str, run_id: str) -> dict:
    """Flan-T5 captions of the run's concepts, made once per distinct concept before the edits, and kept in
    PREFIX/concepts/<run_id>.parquet for audit."""
    concept_captions = generate_concept_captions(config, concepts)
    if concept_captions:
        concepts = config.concepts
        table = pa.table({
            "concept": list(concept_captions),
            "captions": list(concept_captions.values()),
            "model_id": [concepts.model] * len(concept_captions),
            "seed": [concepts.seed] * len(concept_captions),
            "instruction": [concepts.instruction] * len(concept_captions),
            "temperature": [concepts.temperature] * len(concept_captions),
            "top_k": [concepts.top_k] * len(concept_captions),
            "run_id": [run_id] * len(concept_captions),
        })
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        uri = OutputLayout(output_prefix).concepts_file(run_id)
        write_bytes_atomic(uri, sink.getvalue().to_pybytes(), config.storage)
        log.info("generated captions for %d concept(s)", len(concept_captions))
    return concept_captions
