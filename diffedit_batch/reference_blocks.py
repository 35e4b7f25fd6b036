"""Generated blocks of the Markdown docs: text written by a function of the code it describes.

A page holds one between two markers, the first naming the function (a `diffedit_batch` module, a colon, a
function that takes no argument and returns Markdown):

    <!-- generated: diffedit_batch.data.manifest:manifest_reference_markdown -->
    | column | type | required | description |
    ...
    <!-- end generated -->

`tests/test_docs.py` fails, naming the page and line, when a block differs from what its function returns now;
`python -m diffedit_batch.reference_blocks` rewrites every block of README.md and docs/ (and the wholly
generated `docs/reference/config.md`).
"""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GeneratedBlock", "generated_blocks", "refresh", "render"]

_BLOCK = re.compile(
    r"<!-- generated: (?P<source>[\w.]+:\w+) -->\n(?P<text>.*?)<!-- end generated -->", re.DOTALL
)


@dataclass(frozen=True)
class GeneratedBlock:
    source: str  # "module:function"
    line: int  # 1-based line of the opening marker
    text: str  # what the page holds between the markers


def render(source: str) -> str:
    """What the function named by ``source`` ("diffedit_batch.module:function") returns now."""
    module_name, _, function_name = source.partition(":")
    if not module_name.startswith("diffedit_batch"):
        raise ValueError(f"a generated block must name a diffedit_batch function, not {source!r}")
    return getattr(importlib.import_module(module_name), function_name)()


def generated_blocks(text: str) -> list[GeneratedBlock]:
    """Every generated block of a page's text, in order."""
    return [
        GeneratedBlock(match["source"], text.count("\n", 0, match.start()) + 1, match["text"])
        for match in _BLOCK.finditer(text)
    ]


def refresh(text: str) -> str:
    """The page's text with every generated block rewritten from its function."""
    return _BLOCK.sub(
        lambda m: f"<!-- generated: {m['source']} -->\n{render(m['source'])}<!-- end generated -->", text
    )


def _main(root: Path) -> None:
    from diffedit_batch.config import write_config_reference

    write_config_reference(root / "docs" / "reference" / "config.md")
    for page in [root / "README.md", *sorted((root / "docs").rglob("*.md"))]:
        text = page.read_text()
        new = refresh(text)
        if new != text:
            page.write_text(new)
            print(f"rewrote {page.relative_to(root)}")


if __name__ == "__main__":
    _main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
