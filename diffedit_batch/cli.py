"""`diffedit-batch`: parse arguments, load the config, call the library. Nothing else lives here."""

from __future__ import annotations

import argparse
import logging
import sys


def _run(args: argparse.Namespace) -> int:
    from diffedit_batch.config import ConfigError, load_config
    from diffedit_batch.data.manifest import ManifestError
    from diffedit_batch.pipeline import JobSetupError, run_job

    try:
        config = load_config(args.config, args.set or ())
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    try:
        summary = run_job(config, args.input, args.output, address=args.address)
    except ManifestError as error:
        print(f"manifest error: {error}", file=sys.stderr)
        return 2
    except JobSetupError as error:
        print(f"cannot run: {error}", file=sys.stderr)
        return 2
    print(summary.line())
    if summary.failed_fraction > config.job.max_failed_fraction:
        print(
            f"{summary.failed + summary.duplicates} of {summary.attempted} edits failed "
            f"({summary.failed_fraction:.1%} > job.max_failed_fraction {config.job.max_failed_fraction:.1%})",
            file=sys.stderr,
        )
        return 1
    return 0


def _storage_options(args: argparse.Namespace):
    """Storage options from the --config/--set a report or export was given (defaults without one)."""
    from diffedit_batch.config import load_config

    return load_config(args.config, args.set or ()).storage


def _report(args: argparse.Namespace) -> int:
    from diffedit_batch.config import ConfigError
    from diffedit_batch.data.storage import StorageError
    from diffedit_batch.report import build_report

    try:
        result = build_report(
            args.prefix, _storage_options(args), output=args.output, thumb_size=args.thumb_size,
            page_size=args.page_size, workers=args.workers, thumbnails=not args.no_thumbnails,
        )
    except (ConfigError, StorageError) as error:
        print(f"report error: {error}", file=sys.stderr)
        return 2
    print(f"report of {result.records} records: {result.index_uri} ({result.thumbnails_made} thumbnails made, "
          f"{result.thumbnails_reused} reused, {result.thumbnails_failed} failed; {result.seconds:.1f} s)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from diffedit_batch.config import ConfigError
    from diffedit_batch.data.export import export_dataset
    from diffedit_batch.data.storage import StorageError

    try:
        result = export_dataset(
            args.prefix, args.output, _storage_options(args), part_bytes=int(args.part_mb * 1024 * 1024),
            include_source=not args.no_source, export_format=args.format,
        )
    except (ConfigError, StorageError, ValueError) as error:
        print(f"export error: {error}", file=sys.stderr)
        return 2
    print(f"exported {result.rows} edits in {len(result.parts)} parts ({result.skipped} skipped for unreadable "
          f"outputs, {result.sources_missing} without their source picture)")
    return 0


def _compact(args: argparse.Namespace) -> int:
    from diffedit_batch.config import ConfigError
    from diffedit_batch.data.compaction import compact_records
    from diffedit_batch.data.storage import StorageError

    try:
        result = compact_records(args.prefix, _storage_options(args), records_per_file=args.records_per_file)
    except (ConfigError, StorageError, ValueError) as error:
        print(f"compact error: {error}", file=sys.stderr)
        return 2
    print(result.line())
    return 0


def _make_tiny_model(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffedit_batch.testing.tiny_sd import build_tiny_stable_diffusion

    folder = build_tiny_stable_diffusion(args.folder, seed=args.seed)
    print(f"tiny random Stable Diffusion saved to {folder}")
    if args.all:
        from diffedit_batch.testing.tiny_recipe import build_tiny_blip, build_tiny_flan_t5

        siblings = Path(args.folder).parent
        print(f"tiny random Flan-T5 saved to {build_tiny_flan_t5(siblings / 'tiny-flan-t5', seed=args.seed)}")
        print(f"tiny random BLIP saved to {build_tiny_blip(siblings / 'tiny-blip', seed=args.seed)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffedit-batch", description="DiffEdit image editing at dataset scale.")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="edit every row of a Parquet manifest")
    run.add_argument("--config", required=True, help="YAML config (see configs/ and docs/config-reference.md)")
    run.add_argument("--input", required=True, help="manifest: a Parquet file or folder; local, s3:// or gs://")
    run.add_argument("--output", required=True, help="output prefix: local folder, s3:// or gs://")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. job.batch_size=8")
    run.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else in-process Ray)")
    run.set_defaults(handler=_run)

    tiny = commands.add_parser("make-tiny-model", help="build a tiny random Stable Diffusion for offline runs and tests")
    tiny.add_argument("folder", help="where to save it (diffusers folder layout, safetensors)")
    tiny.add_argument("--seed", type=int, default=0)
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

    report = commands.add_parser("report", help="write an HTML report of a job's results (PREFIX/report/index.html)")
    storage_args(report)
    report.add_argument("--output", default=None, help="where to write it (default PREFIX/report)")
    report.add_argument("--thumb-size", type=int, default=128, help="thumbnail size in pixels (default 128)")
    report.add_argument("--page-size", type=int, default=48, help="edits per page of the grid (default 48)")
    report.add_argument("--workers", type=int, default=8, help="threads making thumbnails (default 8)")
    report.add_argument("--no-thumbnails", action="store_true", help="skip thumbnails (summary and grid text only)")
    report.set_defaults(handler=_report)

    export = commands.add_parser(
        "export", help="write the ok edits as a Parquet image dataset (Hugging Face datasets reads it)"
    )
    storage_args(export)
    export.add_argument("--output", default=None, help="output folder (default PREFIX/export)")
    export.add_argument("--part-mb", type=float, default=256.0, help="image megabytes per Parquet part (default 256)")
    export.add_argument("--no-source", action="store_true", help="leave the source pictures out")
    export.add_argument("--format", default="diffedit", choices=["diffedit", "instruct-pix2pix"],
                        help="diffedit: edit, mask, source and metadata; instruct-pix2pix: input_image, edit_prompt, "
                        "edited_image, as the diffusers InstructPix2Pix trainer reads them (default diffedit)")
    export.set_defaults(handler=_export)

    compact = commands.add_parser(
        "compact", help="merge a job's small result-record files into few large ones (runs do it at their end)"
    )
    storage_args(compact)
    compact.add_argument("--records-per-file", type=int, default=10_000,
                         help="merge files smaller than this into files of at least this many records (default 10000)")
    compact.set_defaults(handler=_compact)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
