"""The docs are held to the code, so a change that makes a page untrue fails in the change that made it untrue.

Every Markdown page is checked: README.md and every `docs/**/*.md`, found anew on each run (a new page is tested
as soon as it exists). Failures name the page and line (`docs/guides/x.md:12: ...`).

Fenced blocks (``` or ~~~, at any indentation), by their language:
- `bash`, `sh`, `shell`, `console`, `zsh`: each command (`\\` continuations and quotes across lines joined; in
  `console` blocks only lines with a `$ ` prompt; a `$ ` prompt stripped anywhere; split at `&&`, `||`, `;`, `|`;
  leading `VAR=value` skipped) that runs `diffedit-batch` (any path to it), `python -m diffedit_batch.cli`, or
  `python jobs/edit_manifest.py` (as `run`; also after `ray job submit ... --`) parses with the real parser,
  `diffedit_batch.cli.build_parser()`, without running anything. Its `--set KEY=VALUE` overrides must build a valid
  config, and a `--config configs/...` must exist. Placeholders (`PREFIX`, `...`, `s3://bucket/...`) are strings.
- `yaml`, `yml`: must load. A block with `apiVersion` is a Kubernetes manifest: loading it is all. Any other block
  is a job config or a fragment of one: a mapping of config sections, validated by `config_from_dict` (every key
  is optional, so a fragment is checked as the config it makes over the defaults). Write the section header. A
  fragment meant for one config file names it, `yaml over=configs/sdxl.yaml`: it is merged over that file, key by
  key within each section, and the result validated. YAML that is neither config nor Kubernetes (Helm values, a
  dataset card) says so, `yaml not-config`: loading it is all.
- `python`: compiles. `python engine-example` blocks also run in the slow tier on the tiny models (the substitution
  is described in docs/guides/engine-api.md).
- no language or `text`: must hold no `diffedit-batch` command line (label it `bash`, so it is checked).
- anything else (`mermaid`): not checked.

Prose (outside fenced blocks):
- every relative link or image (`[text](path#anchor)`) resolves to a file or folder of the repository, and an
  anchor to a heading of the page it names (GitHub's anchors). Pages that are being written on other branches
  (PENDING_PAGES) may be missing; once they exist they are checked like the rest.
- every code span that starts with a config key (`model.pretrained`, `--set job.batch_size=8`,
  `metrics.background: false`) whose section is a config section names a key of that section.
- every code span followed by the word "column(s)", and the first cell of every table whose header starts with
  `column`, names a column of the manifest, the result records or the export, or one the page declares as a
  user's column with `<!-- columns: label, label_name -->`; in a table headed `setting`, an `EditSettings` field.
- an inline `diffedit-batch COMMAND --option ...` names a command and options it has.
- a repository path, in a code span or as a word of a shell command (`benchmarks/scale_benchmark.py`,
  `jobs/kuberay-rayjob.yaml`; one that starts with scripts/, benchmarks/, jobs/, configs/, examples/, tests/, docs/,
  diffedit_batch/ or .ci/, without wildcards), exists.
- generated blocks (`<!-- generated: module:function -->` ... `<!-- end generated -->`) equal what the function
  returns now (`python -m diffedit_batch.reference_blocks` rewrites them).
And: docs/reference/exit-codes.md lists exactly the `EXIT_*` codes of `diffedit_batch/cli.py`; the README stays a
landing page (at most 250 lines, the task pages linked from its first screen).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from diffedit_batch.cli import build_parser
from diffedit_batch.config import SECTIONS, ConfigError, apply_overrides, config_from_dict
from diffedit_batch.reference_blocks import generated_blocks, render

ROOT = Path(__file__).resolve().parent.parent

# Pages other branches are writing (issue 37's parallel work): a link to one may dangle until it lands.
PENDING_PAGES = {
}

SHELL = {"bash", "sh", "shell", "console", "zsh"}


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


# --- reading a page --------------------------------------------------------------------------------------------


@dataclass
class Block:
    language: str
    info: str  # the whole info string, e.g. "python engine-example"
    line: int  # 1-based line of the first content line
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


def split_page(text: str) -> tuple[list[Block], list[tuple[int, str]]]:
    """The fenced blocks of a page, and its prose lines (1-based number, text) outside them."""
    blocks: list[Block] = []
    prose: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        fence, indent, info = opening["fence"], len(opening["indent"]), opening["info"].strip()
        first = i + 2  # 1-based line of the first content line
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i].lstrip())
            i += 1
        blocks.append(Block(info.split()[0].lower() if info else "", info, first, body))
        i += 1
    return blocks, prose


def read(page: Path) -> tuple[str, list[Block], list[tuple[int, str]]]:
    text = page.read_text()
    blocks, prose = split_page(text)
    return text, blocks, prose


def _code_spans(line: str) -> list[tuple[str, str]]:
    """Each inline code span of a prose line and the text right after it."""
    return [(m.group(2), line[m.end():]) for m in re.finditer(r"(`+)(.+?)\1", line)]


# --- shell blocks ----------------------------------------------------------------------------------------------


def shell_commands(block: Block) -> list[tuple[int, list[str]]]:
    """(line, argv) of every simple command of a shell block."""
    commands: list[tuple[int, list[str]]] = []
    pending, start = "", 0
    for offset, raw in enumerate(block.lines):
        line = raw.rstrip()
        if not pending:
            stripped = line.lstrip()
            if block.language == "console" and not stripped.startswith("$ "):
                continue
            line = stripped[2:] if stripped.startswith("$ ") else stripped
            start = block.line + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        try:
            tokens = _tokens(pending)
        except ValueError:  # a quote that continues on the next line
            pending += "\n"
            continue
        pending = ""
        command: list[str] = []
        for token in tokens + [";"]:
            if token in {"&&", "||", ";", "|", "&", ";;"}:
                if command:
                    commands.append((start, command))
                command = []
            else:
                command.append(token)
    return commands


def _tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def diffedit_argv(argv: list[str]) -> list[str] | None:
    """The `diffedit-batch` arguments a command runs, or None when it runs something else."""
    while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
        argv = argv[1:]
    if not argv:
        return None
    program = os.path.basename(argv[0])
    if program == "diffedit-batch":
        return argv[1:]
    if re.match(r"^python[0-9.]*$", program):
        if argv[1:3] == ["-m", "diffedit_batch.cli"]:
            return argv[3:]
        if len(argv) > 1 and argv[1].endswith("jobs/edit_manifest.py"):
            return ["run", *argv[2:]]
    if program == "ray" and "--" in argv:
        return diffedit_argv(argv[argv.index("--") + 1:])
    return None


def check_command(argv: list[str]) -> str | None:
    """Why `diffedit-batch argv` is wrong, or None."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code == 0:  # --help
            return None
        return "does not parse: " + " ".join(stderr.getvalue().split()).rpartition(" error: ")[2]
    overrides = getattr(args, "set", None) or []
    try:
        config_from_dict(apply_overrides({}, overrides))
    except ConfigError as error:
        return f"--set: {error}"
    config = getattr(args, "config", None)
    if config and config.startswith("configs/") and not (ROOT / config).is_file():
        return f"--config {config}: no such file"
    return None


# --- yaml blocks -----------------------------------------------------------------------------------------------


def check_yaml(text: str, config: bool = True, over: str | None = None) -> str | None:
    """Why a YAML block is wrong, or None; `config=False`: only that it loads; `over`: the config file it is merged
    over (repository-relative)."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        return f"does not load: {' '.join(str(error).split())}"
    if not config or any(isinstance(d, dict) and "apiVersion" in d for d in documents):
        return None  # a Kubernetes manifest, or YAML marked not-config
    if len(documents) != 1 or not isinstance(documents[0], dict):
        return "a YAML block is a job config (a mapping of sections) or a Kubernetes manifest (apiVersion)"
    data = documents[0]
    if over is not None:
        if not (ROOT / over).is_file():
            return f"over={over}: no such file"
        data = {section: dict(values) for section, values in (yaml.safe_load((ROOT / over).read_text()) or {}).items()}
        for section, values in documents[0].items():
            if isinstance(values, dict) and isinstance(data.get(section), dict):
                data[section].update(values)
            else:
                data[section] = values
    try:
        config_from_dict(data)
    except ConfigError as error:
        return f"not a valid config{f' over {over}' if over else ''}: {error}"
    return None


# --- links and anchors -----------------------------------------------------------------------------------------


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings (and explicit `id=`/`name=` anchors)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    _, prose = split_page(text)
    for _, line in prose:
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
        found.update(re.findall(r"""<a\s+(?:id|name)=["']([^"']+)["']""", line))
    return found


_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def check_link(page: Path, target: str) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
        return None
    path, _, anchor = target.partition("#")
    linked = (page.parent / path).resolve() if path else page
    relative = linked.relative_to(ROOT).as_posix() if linked.is_relative_to(ROOT) else str(linked)
    if not linked.exists():
        return None if relative in PENDING_PAGES else f"broken link {target!r}: {relative} does not exist"
    if anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
        return f"broken link {target!r}: {relative} has no heading with anchor #{anchor}"
    return None


# --- names in prose --------------------------------------------------------------------------------------------


def config_key_problem(span: str) -> str | None:
    match = re.match(r"^(?:--set\s+)?([a-z_]+)\.([a-z_0-9]+)(?=$|[\s=:,)])", span)
    if not match or match.group(1) not in SECTIONS:
        return None
    section, key = match.groups()
    if key not in {f.name for f in dataclasses.fields(SECTIONS[section])}:
        return f"`{span}`: {section} has no key {key!r} (docs/reference/config.md lists the keys)"
    return None


def known_columns() -> set[str]:
    from diffedit_batch.data.export import EXPORT_SCHEMA, INSTRUCT_PIX2PIX_SCHEMA
    from diffedit_batch.data.manifest import MANIFEST_COLUMNS
    from diffedit_batch.data.records import RECORD_SCHEMA

    return ({c.name for c in MANIFEST_COLUMNS} | set(RECORD_SCHEMA.names) | set(EXPORT_SCHEMA.names)
            | set(INSTRUCT_PIX2PIX_SCHEMA.names))


def column_problems(text: str, prose: list[tuple[int, str]]) -> list[tuple[int, str]]:
    from diffedit_batch.engine.settings import EditSettings

    columns = known_columns() | {
        name.strip() for declared in re.findall(r"<!-- columns: (.*?) -->", text) for name in declared.split(",")
    }
    settings = {f.name for f in dataclasses.fields(EditSettings)}
    problems: list[tuple[int, str]] = []
    table: str | None = None
    for number, line in prose:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else []
        if not cells:
            table = None
        elif table is None:
            header = cells[0].lower()
            table = "column" if header.startswith("column") else "setting" if header == "setting" else ""
        elif table and not set(cells[0]) <= set("-: "):
            known = columns if table == "column" else settings
            for name in re.findall(r"`([^`]+)`", cells[0]):
                if name not in known:
                    problems.append((number, f"`{name}` in a {table} table is no known {table}"))
        for span, after in _code_spans(line):
            if re.match(r"^\s+columns?\b", after) and re.fullmatch(r"[a-z_][a-z0-9_]*", span) and span not in columns:
                problems.append((number, f"`{span}` column: no manifest, record or export column has that name "
                                         "(a user's column: declare it with <!-- columns: NAME -->)"))
    return problems


def inline_command_problem(span: str) -> str | None:
    if not span.startswith("diffedit-batch "):
        return None
    import argparse

    parser = build_parser()
    words = span.split()[1:]
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if not words or words[0] not in commands:
        return f"`{span}`: no command {words[0] if words else ''!r}"
    options = set(commands[words[0]]._option_string_actions)
    unknown = [w.split("=")[0] for w in words[1:] if w.startswith("--") and w.split("=")[0] not in options]
    return f"`{span}`: {words[0]} has no option {unknown[0]}" if unknown else None


_REPO_PATH = re.compile(r"^(?:scripts|benchmarks|jobs|configs|examples|tests|docs|diffedit_batch|\.ci)/[\w./-]*$")


def path_problem(word: str) -> str | None:
    if _REPO_PATH.match(word) and not (ROOT / word).exists():
        return f"`{word}`: no such file or folder in the repository"
    return None


# --- the checks, one page each ---------------------------------------------------------------------------------


def page_problems(page: Path) -> list[str]:
    """Every problem of one page, as `path:line: message`."""
    text, blocks, prose = read(page)
    where = _id(page) if page.is_relative_to(ROOT) else str(page)
    problems: list[tuple[int, str]] = []
    for block in blocks:
        if block.language in SHELL:
            for line, argv in shell_commands(block):
                problems += [(line, problem) for word in argv if (problem := path_problem(word))]
                args = diffedit_argv(argv)
                if args is not None and (problem := check_command(args)):
                    problems.append((line, f"`{shlex.join(argv)}` {problem}"))
        elif block.language in {"yaml", "yml"}:
            words = block.info.split()[1:]
            over = next((word.partition("=")[2] for word in words if word.startswith("over=")), None)
            if problem := check_yaml(block.text, config="not-config" not in words, over=over):
                problems.append((block.line, f"YAML block: {problem}"))
        elif block.language == "python":
            try:
                compile(block.text, f"{where}:{block.line}", "exec")
            except SyntaxError as error:
                problems.append((block.line + (error.lineno or 1) - 1, f"Python block does not compile: {error.msg}"))
        elif block.language in {"", "text"}:
            for offset, line in enumerate(block.lines):
                if re.match(r"^\s*(\$\s+)?(\S*/)?diffedit-batch\s", line):
                    problems.append((block.line + offset, "a diffedit-batch command in a block without a shell "
                                                          "language: label the block bash so it is checked"))
    for number, line in prose:
        for match in _LINK.finditer(re.sub(r"(`+).+?\1", "", line)):
            if problem := check_link(page, match.group(1)):
                problems.append((number, problem))
        for span, _ in _code_spans(line):
            for problem in (config_key_problem(span), inline_command_problem(span), path_problem(span)):
                if problem:
                    problems.append((number, problem))
    problems += column_problems(text, prose)
    for block in generated_blocks(text):
        if block.text != render(block.source):
            problems.append((block.line, f"generated block of {block.source} is stale: run "
                                         "python -m diffedit_batch.reference_blocks"))
    return [f"{where}:{line}: {message}" for line, message in sorted(problems)]


@pytest.mark.parametrize("page", pages(), ids=_id)
def test_page_is_true_to_the_code(page):
    problems = page_problems(page)
    assert not problems, "\n".join(problems)


def test_every_page_of_docs_is_found():
    found = {_id(page) for page in pages()}
    assert {"README.md", "docs/index.md", "docs/reference/config.md", "docs/guides/getting-started.md"} <= found


def test_the_exit_codes_page_lists_every_exit_code():
    from diffedit_batch import cli

    codes = {value for name, value in vars(cli).items() if name.startswith("EXIT_")}
    _, prose = split_page((ROOT / "docs" / "reference" / "exit-codes.md").read_text())
    listed = {int(m.group(1)) for _, line in prose if (m := re.match(r"^\|\s*(\d+)\s*\|", line))}
    assert listed == codes, f"docs/reference/exit-codes.md lists {sorted(listed)}; cli.py has {sorted(codes)}"


def test_the_readme_is_a_landing_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move detail to docs/"
    first_screen = "\n".join(lines[:40])
    for task_page in ["docs/guides/getting-started.md", "docs/guides/editing-at-scale.md", "docs/guides/cluster.md",
                      "docs/guides/scheduled-runs.md", "docs/guides/candidates.md",
                      "docs/guides/training-exports.md", "docs/reference/exit-codes.md"]:
        assert f"({task_page}" in first_screen, f"README.md's first 40 lines do not link {task_page}"
    # .ci/run runs the README's test command: it must stay in the README, word for word.
    assert "scripts/setup --test && .venv/bin/python -m pytest -q" in (ROOT / ".ci" / "run").read_text()
    assert "```bash\nscripts/setup --test && .venv/bin/python -m pytest -q\n```" in "\n".join(lines)


# --- the checker catches what it should --------------------------------------------------------------------------

_BAD_PAGE = """# A page

See [a missing page](missing.md), [a missing anchor](#nowhere) and [the title](#a-page).
Set `job.batch_sise` or `model.pretrained`; the `not_a_column` column; `diffedit-batch run --dry`; `jobs/gone.py`.

```bash
$ diffedit-batch run --config configs/tiny.yaml --input in.parquet \\
    --output out --set edit.guidance=3
diffedit-batch export PREFIX --format zip
kubectl apply -f jobs/missing.yaml && diffedit-batch report PREFIX
```

```yaml
edit:
  num_inference_step: 20
```

```yaml
job: {batch_size: 4}
```

```yaml
apiVersion: v1
kind: ConfigMap
```

```yaml not-config
featureGates: [{name: RayCronJob, enabled: true}]
```

```yaml not-config
a: [unclosed
```

```yaml over=configs/tiny.yaml
job: {batch_size: 2}
```

```yaml over=configs/tiny.yaml
job: {num_actors: -1}
```

```python
def broken(:
```

```
diffedit-batch run --config x.yaml
```

<!-- generated: diffedit_batch.data.manifest:manifest_reference_markdown -->
| stale |
<!-- end generated -->
"""


def test_the_checker_names_each_problem_with_its_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(_BAD_PAGE)
    problems = page_problems(page)
    expected = [
        (3, "missing.md"), (3, "#nowhere"), (4, "job.batch_sise"), (4, "not_a_column"), (4, "has no option --dry"),
        (4, "jobs/gone.py"), (7, "edit.guidance"), (9, "invalid choice: 'zip'"), (10, "jobs/missing.yaml"),
        (14, "num_inference_step"), (32, "does not load"), (40, "over configs/tiny.yaml: job.num_actors"),
        (44, "does not compile"), (48, "label the block bash"), (51, "stale"),
    ]
    for line, needle in expected:
        assert any(p.startswith(f"{page}:{line}: ") and needle in p for p in problems), (line, needle, problems)
    assert len(problems) == len(expected), problems


def test_a_pending_page_may_be_missing_but_not_a_typo_of_it(tmp_path):
    docs = ROOT / "docs" / "guides"
    assert check_link(docs / "x.md", "flow-models.md") is None or (docs / "flow-models.md").exists()
    assert check_link(docs / "x.md", "flow-model.md") is not None


# --- engine-API examples run (slow tier) ------------------------------------------------------------------------


def engine_examples() -> list[tuple[str, Block]]:
    return [(f"{_id(page)}:{block.line}", block) for page in pages() for block in read(page)[1]
            if block.language == "python" and "engine-example" in block.info.split()[1:]]


def on_tiny_models(code: str, tiny_sd: Path, tiny_sdxl: Path) -> str:
    """The convention of docs/guides/engine-api.md: the tiny model of the same family for the hub id given to
    `from_pretrained`, the CPU for CUDA, float32 for float16."""
    def model(match: re.Match) -> str:
        folder = tiny_sdxl if "xl" in match.group(2).lower() else tiny_sd
        return f"{match.group(1)}{str(folder)!r}"

    code = re.sub(r"""(from_pretrained\(\s*)(["'][^"']+["'])""", model, code)
    return code.replace('"cuda"', '"cpu"').replace("'cuda'", "'cpu'").replace("torch.float16", "torch.float32")


def test_the_engine_api_guide_has_an_example_that_runs():
    assert any(where.startswith("docs/guides/engine-api.md") for where, _ in engine_examples())


@pytest.mark.slow
@pytest.mark.parametrize("where,block", engine_examples(), ids=[w for w, _ in engine_examples()])
def test_engine_example_runs_on_the_tiny_model(where, block, tiny_model_dir, tiny_sdxl_dir, tmp_path, monkeypatch):
    code = on_tiny_models(block.text, tiny_model_dir, tiny_sdxl_dir)
    assert str(tiny_model_dir) in code or str(tiny_sdxl_dir) in code, f"{where}: no from_pretrained(hub id) to replace"
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})


# --- the generated references follow the code --------------------------------------------------------------------


def test_a_record_column_without_a_meaning_stops_the_records_reference():
    import pyarrow as pa

    from diffedit_batch.data.record_reference import record_reference_markdown
    from diffedit_batch.data.records import RECORD_SCHEMA

    with pytest.raises(ValueError, match="new_column"):
        record_reference_markdown(RECORD_SCHEMA.append(pa.field("new_column", pa.string())))
    table = record_reference_markdown()
    assert all(f"`{name}`" in table for name in RECORD_SCHEMA.names)


def test_the_cli_reference_shows_a_new_option_with_its_help_and_choices():
    import argparse

    from diffedit_batch.cli_reference import cli_reference_markdown

    parser = build_parser()
    run = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    run.add_argument("--colour", choices=["red", "blue"], default="red", help="a new option")
    text = cli_reference_markdown(parser)
    assert "| `--colour {red,blue}` | a new option | one of `red`, `blue`; default `red` |" in text
    assert "usage: diffedit-batch run" in text and "### `compact`" in text
