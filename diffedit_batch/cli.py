"""`diffedit-batch`: parse arguments, load the config, call the library. Nothing else lives here."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading


# Exit codes of `run` (docs/reference/exit-codes.md): schedulers and scripts tell the cases apart by these.
EXIT_DONE = 0  # every edit ended; failed rows within job.max_failed_fraction
EXIT_FAILED = 1  # rows failed over job.max_failed_fraction, or the run's own files could not be written
EXIT_BAD_INPUT = 2  # bad config, manifest, models or output prefix, or settings changed undecided: nothing was done
EXIT_LEASE_HELD = 3  # another live run holds the output prefix: nothing was done
EXIT_INTERRUPTED = 130  # SIGINT or SIGTERM: what finished is recorded, a re-run does the rest


def _say(message: str) -> None:
    """One line for the operator on stderr, credentials redacted (a --set value or a URI may carry some)."""
    from diffedit_batch.redaction import redact_text

    print(redact_text(message), file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from diffedit_batch.config import ConfigError, load_config
    from diffedit_batch.data.lease import LeaseError, LeaseHeld, LeaseStorageError
    from diffedit_batch.data.manifest import ManifestError
    from diffedit_batch.data.storage import redact_uri
    from diffedit_batch.pipeline import JobSetupError, SettingsChanged, run_job
    from diffedit_batch.pipeline.preflight import (
        PreflightError,
        check_devices,
        check_input_apart,
        check_models,
        check_output_prefix,
    )

    try:
        config = load_config(args.config, args.set or ())
        check_input_apart(args.input, args.output, config.storage)
        check_output_prefix(args.output, config.storage)
        check_models(config)
        check_devices(config, local=not (args.address or os.environ.get("RAY_ADDRESS")))
    except ConfigError as error:
        _say(f"config error: {error}")
        return EXIT_BAD_INPUT
    except PreflightError as error:
        _say(f"cannot run: {error}")
        return EXIT_BAD_INPUT
    try:
        summary = run_job(config, args.input, args.output, address=args.address, break_lease=args.break_lease,
                          verbose=args.verbose, on_settings_change=args.on_settings_change)
    except ManifestError as error:
        _say(f"manifest error: {error}")
        return EXIT_BAD_INPUT
    except SettingsChanged as error:
        _say(f"not started: {error}")
        return EXIT_BAD_INPUT
    except LeaseStorageError as error:
        _say(f"not started: {error}; run the same command again once the storage answers")
        return EXIT_FAILED
    except (JobSetupError, LeaseError, PreflightError) as error:
        _say(f"cannot run: {error}")
        return EXIT_BAD_INPUT
    except LeaseHeld as error:
        _say(f"not started: {error}")
        return EXIT_LEASE_HELD
    except KeyboardInterrupt as interrupt:
        signal_name = str(interrupt) or "SIGINT"
        if getattr(interrupt, "summary", None) is not None:
            print(interrupt.summary.line())
        _say(f"interrupted by {signal_name}: edits that finished are recorded; run the same command again to do "
             f"the rest (output {redact_uri(args.output)})")
        return EXIT_INTERRUPTED
    except Exception as error:  # ours or a library's: one line (the traceback with --verbose); the run file says so
        if args.verbose:
            import traceback

            _say("".join(traceback.format_exception(error)).rstrip())
        from diffedit_batch.pipeline.task_errors import one_line

        _say(f"run failed: {one_line(f'{type(error).__name__}: {error}')}; run the same command again once it is "
             "fixed" + ("" if args.verbose else " (--verbose shows the traceback)"))
        return EXIT_FAILED
    print(summary.line())
    if summary.status == "failed":
        _say(f"run failed: {summary.error}; run the same command again once it is fixed")
        return EXIT_FAILED
    if summary.failed_fraction > config.job.max_failed_fraction:
        _say(_failed_line(summary, config.job.max_failed_fraction))
        return EXIT_FAILED
    return EXIT_DONE


def _failed_line(summary, max_failed_fraction: float) -> str:
    """The one line of a run whose failed rows exceed `job.max_failed_fraction`, in the summary's own counts: a
    duplicate id is no failed edit, but it counts against the fraction."""
    counts = f"{summary.failed} failed" + (f" and {summary.duplicates} duplicate id(s)" if summary.duplicates else "")
    return (f"{counts} of {summary.attempted} edits ({summary.failed_fraction:.1%} > job.max_failed_fraction "
            f"{max_failed_fraction:.1%})")


def _storage_options(args: argparse.Namespace):
    """Storage options from the --config/--set a report or export was given (defaults without one)."""
    from diffedit_batch.config import load_config

    return load_config(args.config, args.set or ()).storage


def _positive(args: argparse.Namespace, *names: str) -> None:
    """ValueError naming the first of the numeric options `names` that is not a positive, finite number."""
    import math

    for name in names:
        value = getattr(args, name)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive number, got {value!r}")


def _report(args: argparse.Namespace) -> int:
    from diffedit_batch.config import ConfigError
    from diffedit_batch.data.results import check_job_output
    from diffedit_batch.data.storage import StorageError
    from diffedit_batch.report import build_report

    try:
        _positive(args, "thumb_size", "page_size", "workers")
        options = _storage_options(args)
        check_job_output(args.prefix, options)  # before anything is written: a wrong prefix creates nothing
        result = build_report(
            args.prefix, options, output=args.output, thumb_size=args.thumb_size,
            page_size=args.page_size, workers=args.workers, thumbnails=not args.no_thumbnails,
        )
    except (ConfigError, StorageError, ValueError) as error:
        _say(f"report error: {error}")
        return 2
    print(f"report of {result.records} records: {result.index_uri} ({result.thumbnails_made} thumbnails made, "
          f"{result.thumbnails_reused} reused, {result.thumbnails_failed} failed; {result.seconds:.1f} s)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from diffedit_batch.config import ConfigError
    from diffedit_batch.data.export import export_dataset
    from diffedit_batch.data.results import check_job_output
    from diffedit_batch.data.storage import StorageError

    try:
        _positive(args, "part_mb")
        options = _storage_options(args)
        check_job_output(args.prefix, options)  # before anything is written: a wrong prefix creates nothing
        result = export_dataset(
            args.prefix, args.output, options, part_bytes=max(1, int(args.part_mb * 1024 * 1024)),
            include_source=not args.no_source, export_format=args.format, settings=args.settings,
            with_sources=args.with_sources,
        )
    except (ConfigError, StorageError, ValueError) as error:
        _say(f"export error: {error}")
        return 2
    if args.format == "imagefolder":
        print(f"exported {result.rows} pictures ({result.sources} of them sources) as an image folder "
              f"({result.skipped} skipped for unreadable outputs)")
        return 0
    print(f"exported {result.rows} edits in {len(result.parts)} parts ({result.skipped} skipped for unreadable "
          f"outputs, {result.sources_missing} without their source picture"
          + (f", {result.other_settings} made under other settings left out: --settings all includes them"
             if result.other_settings else "") + ")")
    return 0


def _compact(args: argparse.Namespace) -> int:
    from diffedit_batch.config import ConfigError, load_config
    from diffedit_batch.data.compaction import compact_records
    from diffedit_batch.data.extra_records import remove_extra_records, remove_unnamed_outputs
    from diffedit_batch.data.lease import LeaseError, LeaseHeld, acquire_lease
    from diffedit_batch.data.results import check_job_output
    from diffedit_batch.data.storage import StorageError
    from diffedit_batch.data.run_metadata import new_run_id

    try:
        config = load_config(args.config, args.set or ())
        if args.records_per_file <= 0:
            raise ValueError(f"records_per_file must be a positive integer, got {args.records_per_file}")
        check_job_output(args.prefix, config.storage)  # before the lease, which would create the folder
        # The run lease: a compaction must not merge record files under a run that is writing them.
        with acquire_lease(args.prefix.rstrip("/") or args.prefix, f"compact-{new_run_id()}", config.storage,
                           config.job.lease_timeout_s, break_lease=args.break_lease):
            # A run killed outright may have left an edit's earlier record beside its new one: one stays.
            extra = remove_extra_records(args.prefix, config.storage)
            unnamed = remove_unnamed_outputs(args.prefix, config.storage)
            result = compact_records(args.prefix, config.storage, records_per_file=args.records_per_file)
    except LeaseHeld as error:
        _say(f"not started: {error}")
        return EXIT_LEASE_HELD
    except (ConfigError, StorageError, LeaseError, ValueError) as error:
        _say(f"compact error: {error}")
        return 2
    if extra.removed:
        print(f"removed {extra.removed} extra record(s) of edits recorded twice (the newest kept) from "
              f"{extra.files_rewritten} file(s), and {extra.outputs_deleted} output file(s) only they named")
    if unnamed:
        print(f"removed {unnamed} image or mask file(s) that no record names")
    print(result.line())
    return 0


def _make_tiny_model(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.family == "sdxl":
        from diffedit_batch.testing.tiny_sdxl import build_tiny_sdxl

        print(f"tiny random SDXL saved to {build_tiny_sdxl(args.folder, seed=args.seed)}")
    elif args.family == "sd3":
        from diffedit_batch.testing.tiny_sd3 import build_tiny_sd3

        print(f"tiny random SD 3.5 saved to {build_tiny_sd3(args.folder, seed=args.seed)}")
    elif args.family in ("flux", "flux-schnell"):
        from diffedit_batch.testing.tiny_flux import build_tiny_flux

        schnell = args.family == "flux-schnell"
        folder = build_tiny_flux(args.folder, seed=args.seed, guidance_embeds=not schnell)
        print(f"tiny random FLUX.1-{'schnell' if schnell else 'dev'} saved to {folder}")
    else:
        from diffedit_batch.testing.tiny_sd import build_tiny_stable_diffusion

        print(f"tiny random Stable Diffusion saved to {build_tiny_stable_diffusion(args.folder, seed=args.seed)}")
    if args.all:
        from diffedit_batch.testing.tiny_recipe import build_tiny_blip, build_tiny_flan_t5

        siblings = Path(args.folder).parent
        print(f"tiny random Flan-T5 saved to {build_tiny_flan_t5(siblings / 'tiny-flan-t5', seed=args.seed)}")
        print(f"tiny random BLIP saved to {build_tiny_blip(siblings / 'tiny-blip', seed=args.seed)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # The global options are accepted before or after the command (`diffedit-batch run ... --verbose`): the
    # top parser and every command share them with SUPPRESS defaults, so a command never resets a value given
    # before it; main() supplies the defaults.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--log-level", default=argparse.SUPPRESS, help="this tool's logging level (default INFO)")
    shared.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="also show Ray's and Ray Data's own console output (progress blocks, info lines)")
    parser = argparse.ArgumentParser(prog="diffedit-batch", description="DiffEdit image editing at dataset scale.",
                                     parents=[shared])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", parents=[shared], help="edit every row of a Parquet manifest")
    run.add_argument("--config", required=True, help="YAML config (see configs/ and docs/reference/config.md)")
    run.add_argument("--input", required=True,
                     help="the input: a Parquet manifest (file or folder), WebDataset shards (.tar or a folder of "
                     "them) or an ImageFolder (<root>/<class>/<file>); local, s3:// or gs:// (docs/reference/inputs.md)")
    run.add_argument("--output", required=True, help="output prefix: local folder, s3:// or gs://")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. job.batch_size=8")
    run.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else in-process Ray)")
    run.add_argument("--break-lease", action="store_true",
                     help="take the output's run lease even from a live run (only when that run is certainly gone)")
    run.add_argument("--on-settings-change", choices=["redo", "keep"], default=None,
                     help="what to do with edits recorded ok under other settings (model, edit settings...): redo "
                     "edits them again, keep keeps them (their records keep their own settings fingerprint); without "
                     "it such a run stops before any work with exit 2 and names what changed. Records from before "
                     "fingerprints are kept unless this is redo")
    run.set_defaults(handler=_run)

    tiny = commands.add_parser("make-tiny-model", parents=[shared],
                               help="build a tiny random Stable Diffusion, SDXL, SD 3.5 or FLUX.1 for offline runs "
                               "and tests")
    tiny.add_argument("folder", help="where to save it (diffusers folder layout, safetensors)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--family", choices=["sd", "sdxl", "sd3", "flux", "flux-schnell"], default="sd",
                      help="sd: SD 2.1's layout and scheduler (v-prediction); sdxl: SDXL base's layout (two text "
                      "encoders, Euler scheduler config), e.g. models/tiny-sdxl; sd3: SD 3.5 medium's layout (CLIP-L, "
                      "CLIP-G, T5, SD3 transformer); flux: FLUX.1-dev's (CLIP-L, T5, transformer with a guidance "
                      "embedding); flux-schnell: FLUX.1-schnell's (no guidance embedding)")
    tiny.add_argument(
        "--all",
        action="store_true",
        help="also build the tiny Flan-T5 (concept prompts) and BLIP (captions) models, as the folder's siblings "
        "tiny-flan-t5/ and tiny-blip/ (the paths configs/tiny.yaml uses)",
    )
    tiny.set_defaults(handler=_make_tiny_model)

    def storage_args(command: argparse.ArgumentParser) -> None:
        command.add_argument("prefix", help="the job's output prefix: local folder, s3:// or gs://")
        command.add_argument("--config", default=None, help="YAML config whose storage section applies (optional)")
        command.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")

    report = commands.add_parser("report", parents=[shared],
                                 help="write an HTML report of a job's results (PREFIX/report/index.html)")
    storage_args(report)
    report.add_argument("--output", default=None, help="where to write it (default PREFIX/report)")
    report.add_argument("--thumb-size", type=int, default=128, help="thumbnail size in pixels (default 128)")
    report.add_argument("--page-size", type=int, default=48, help="edits per page of the grid (default 48)")
    report.add_argument("--workers", type=int, default=8, help="threads making thumbnails (default 8)")
    report.add_argument("--no-thumbnails", action="store_true", help="skip thumbnails (summary and grid text only)")
    report.set_defaults(handler=_report)

    export = commands.add_parser(
        "export", parents=[shared],
        help="write the ok edits as a Parquet image dataset (Hugging Face datasets reads it) or an image folder",
    )
    storage_args(export)
    export.add_argument("--output", default=None, help="output folder (default PREFIX/export)")
    export.add_argument("--part-mb", type=float, default=256.0, help="image megabytes per Parquet part (default 256)")
    export.add_argument("--no-source", action="store_true", help="leave the source pictures out")
    export.add_argument("--format", default="diffedit", choices=["diffedit", "instruct-pix2pix", "imagefolder"],
                        help="diffedit: edit, mask, source and metadata; instruct-pix2pix: input_image, edit_prompt, "
                        "edited_image, as the diffusers InstructPix2Pix trainer reads them; imagefolder: "
                        "<class name>/<key>.png and metadata.jsonl, as torchvision's ImageFolder and Hugging Face's "
                        "imagefolder loader read them (default diffedit)")
    export.add_argument("--with-sources", action="store_true",
                        help="add each source picture an exported edit was made from, once (synthetic: false, its "
                        "carried columns, no mask): a whole training split")
    export.add_argument("--settings", default="current", choices=["current", "all"],
                        help="current: only the edits made under the newest run's settings (its settings "
                        "fingerprints); all: every ok edit, whatever settings made it (default current)")
    export.set_defaults(handler=_export)

    compact = commands.add_parser(
        "compact", parents=[shared],
        help="merge a job's small result-record files into few large ones (runs do it at their end)",
    )
    storage_args(compact)
    compact.add_argument("--records-per-file", type=int, default=10_000,
                         help="merge files smaller than this into files of at least this many records (default 10000)")
    compact.add_argument("--break-lease", action="store_true",
                         help="take the output's run lease even from a live run (only when that run is certainly gone)")
    compact.set_defaults(handler=_compact)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.verbose = getattr(args, "verbose", False)
    args.log_level = getattr(args, "log_level", "INFO")
    # Other libraries' info lines (HTTP clients, model loaders) only with --verbose; ours at --log-level.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("diffedit_batch").setLevel(args.log_level.upper())
    try:
        with _sigterm_as_interrupt():
            return args.handler(args)
    except KeyboardInterrupt as interrupt:  # before a run started, or in another command: nothing half-done
        print(f"interrupted by {str(interrupt) or 'SIGINT'}", file=sys.stderr)
        return EXIT_INTERRUPTED


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM stops any command as SIGINT does (a scheduler's stop during the preflight, a report, an export):
    one line and exit 130, not a silent 143. `run` installs its own handlers for the run itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
