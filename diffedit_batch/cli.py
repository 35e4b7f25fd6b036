"""`diffedit-batch`: parse arguments, load the config, call the library. Nothing else lives here."""

from __future__ import annotations

import argparse
import logging
import sys


def _run(args: argparse.Namespace) -> int:
    from diffedit_batch.config import ConfigError, load_config
    from diffedit_batch.data.manifest import ManifestError
    from diffedit_batch.pipeline import run_job

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
    print(summary.line())
    if summary.failed_fraction > config.job.max_failed_fraction:
        print(
            f"{summary.failed + summary.duplicates} of {summary.attempted} edits failed "
            f"({summary.failed_fraction:.1%} > job.max_failed_fraction {config.job.max_failed_fraction:.1%})",
            file=sys.stderr,
        )
        return 1
    return 0


def _make_tiny_model(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffedit_batch.engine.tiny import build_tiny_stable_diffusion

    folder = build_tiny_stable_diffusion(args.folder, seed=args.seed)
    print(f"tiny random Stable Diffusion saved to {folder}")
    if args.all:
        from diffedit_batch.engine.tiny_helpers import build_tiny_blip, build_tiny_flan_t5

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
