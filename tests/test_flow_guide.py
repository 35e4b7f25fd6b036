"""docs/guides/flow-models.md: every `diffedit-batch` command parses with the real CLI, every YAML block validates
against the config schema."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from diffedit_batch.cli import build_parser
from diffedit_batch.config import config_from_dict

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "flow-models.md"
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(GUIDE.read_text(encoding="utf-8")) if lang == language]


def test_every_command_in_the_guide_parses():
    commands = [line[line.index("diffedit-batch"):] for body in blocks("bash") for line in body.splitlines()
                if "diffedit-batch " in line]
    assert len(commands) >= 7
    parser = build_parser()
    for command in commands:
        arguments = parser.parse_args(shlex.split(command)[1:])
        assert arguments.command in ("run", "make-tiny-model"), command
        if arguments.command == "make-tiny-model":
            assert arguments.family in ("sd3", "flux", "flux-schnell")


def test_every_yaml_block_in_the_guide_is_a_valid_config():
    bodies = blocks("yaml")
    assert len(bodies) >= 3
    for body in bodies:
        config_from_dict(yaml.safe_load(body))
