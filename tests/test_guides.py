"""The guides under docs/guides: every `diffedit-batch ...` command parses with the real CLI and every YAML block
is a valid config."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from diffedit_batch.cli import build_parser
from diffedit_batch.config import config_from_dict

GUIDES = sorted((Path(__file__).resolve().parents[1] / "docs" / "guides").glob("*.md"))
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(kind: str):
    for guide in GUIDES:
        for language, body in _BLOCK.findall(guide.read_text()):
            if language == kind:
                yield guide.name, body


@pytest.mark.parametrize("guide, body", list(blocks("bash")))
def test_every_command_parses(guide, body):
    commands = [line for line in body.splitlines() if line.startswith("diffedit-batch ")]
    assert commands, guide
    for line in commands:
        build_parser().parse_args(shlex.split(line)[1:])


@pytest.mark.parametrize("guide, body", list(blocks("yaml")))
def test_every_yaml_block_is_a_valid_config(guide, body):
    config_from_dict(yaml.safe_load(body))
