"""Docs that cannot drift: the pages are checked against the code, as sqlite-utils' docs tests do.

- ARCHITECTURE.md has one row per module of `normscope/` (and none for a module that does not
  exist), each on the floor `tests/test_layout.py` gives it, and stays one page (<= 130 lines);
- every link between the project's Markdown pages resolves, and every citation of
  `docs/architectures.md` in the code (rule tables included) names a section that exists; every
  model type and config key normscope reads is written up there;
- the README documents every command and every option of every command (introspected from the
  typer app), states the API's signatures, the JSON keys and `schema_version` the output has, and
  every example command in it parses, and runs with the exit code it states when its inputs are
  the bundled fixtures; its Python example runs; its test command is the one `.ci/run` runs.

A new module, option, config key or example fails here until the docs say it: that is part of
adding it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT
from test_layout import MODULES, floor_of

ARCHITECTURE = REPO_ROOT / "ARCHITECTURE.md"
PACKAGE = REPO_ROOT / "normscope"
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`([^`]+)`\s*\|")


def _module_of_row(cell: str) -> str:
    """`sources/hub/remote.py` -> normscope.sources.hub.remote; `fold/` -> normscope.fold."""
    if cell == "__init__.py":
        return "normscope"
    path = cell[:-1] if cell.endswith("/") else cell.removesuffix(".py")
    return "normscope." + path.replace("/", ".")


def _rows() -> list[tuple[int, str, str]]:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    return [
        (int(m[1]), m[2], _module_of_row(m[2]))
        for m in map(ROW.match, text.splitlines())
        if m is not None
    ]


def test_architecture_has_one_row_per_module() -> None:
    named = [module for _, _, module in _rows()]
    twice = sorted({m for m in named if named.count(m) > 1})
    assert twice == [], f"modules listed more than once in ARCHITECTURE.md: {twice}"
    missing = sorted(set(MODULES) - set(named))
    assert missing == [], (
        f"modules without a row in ARCHITECTURE.md: {missing}; add `| floor | `path.py` | what it "
        "owns |` in floor order (a package is `name/`, its floor from tests/test_layout.py)"
    )
    ghosts = sorted(set(named) - set(MODULES))
    assert ghosts == [], f"ARCHITECTURE.md rows naming no module: {ghosts}"


def test_architecture_rows_name_packages_as_folders() -> None:
    # `fold/` is the package (its __init__.py), `fold.py` would be a module: say which.
    for _, cell, module in _rows():
        if module == "normscope":
            continue
        is_package = MODULES[module].name == "__init__.py" if module in MODULES else False
        assert cell.endswith("/") == is_package, f"{cell}: write a package as `name/`"


@pytest.mark.parametrize(("floor", "cell", "module"), _rows(), ids=lambda v: str(v))
def test_architecture_floor_is_the_layout_tests_floor(floor: int, cell: str, module: str) -> None:
    if module not in MODULES:
        pytest.fail(f"{cell}: no such module")
    assert floor == floor_of(module)[1], f"{cell}: ARCHITECTURE.md says floor {floor}"


def test_architecture_is_one_page() -> None:
    lines = ARCHITECTURE.read_text(encoding="utf-8").count("\n")
    assert lines <= 130, f"ARCHITECTURE.md has {lines} lines: one page is at most 130"


# --- links --------------------------------------------------------------------------------------

PAGES = sorted(p for where in ("", "docs/", "benchmarks/") for p in REPO_ROOT.glob(where + "*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to `-`."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (fenced code is no heading)."""
    out: set[str] = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)", line)):
            out.add(slug(m[1]))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_link_between_pages_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # an URL, not a file of the project
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert broken == [], f"{page.name}: links to nothing: {broken}"


# --- the cited sources --------------------------------------------------------------------------

ARCHITECTURES = REPO_ROOT / "docs" / "architectures.md"
CITATION = re.compile(r"docs/architectures\.md#([\w-]+)")
PROJECT_FILES = sorted(
    p
    for folder in ("normscope", "tests", "fixtures", "benchmarks")
    for p in (REPO_ROOT / folder).rglob("*.py")
    if p.name != "test_docs.py"
)


def _traps() -> int:
    """How many numbered traps the Traps section lists."""
    text = ARCHITECTURES.read_text(encoding="utf-8")
    section = text.split("\n## Traps\n", 1)[1].split("\n## ", 1)[0]
    return len(re.findall(r"^\d+\. ", section, flags=re.MULTILINE))


@pytest.mark.parametrize("path", PROJECT_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_citation_names_a_section_that_exists(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    # The shared research notes are not part of the project: a user could not follow them.
    stale = [m[0] for m in re.finditer(r"\b(ARCHITECTURES|DOMAIN)\.md", text)]
    assert stale == [], f"{path.name} cites files outside the project: {stale}"
    sections = anchors(ARCHITECTURES)
    missing = sorted({a for a in CITATION.findall(text) if a not in sections})
    assert missing == [], f"{path.name} cites sections docs/architectures.md lacks: {missing}"
    traps = [int(n) for n in re.findall(r"\btraps? (\d+)", text)]
    assert all(1 <= n <= _traps() for n in traps), f"{path.name}: trap numbers {traps}"


def test_every_rule_table_cites_its_section() -> None:
    from normscope.arch import FAMILIES, VOCABULARIES

    sections = anchors(ARCHITECTURES)
    for table in [*FAMILIES, *VOCABULARIES]:
        cited = CITATION.findall(table.source)
        assert cited, f"{table.name}: its source cites no section of docs/architectures.md"
        assert set(cited) <= sections, f"{table.name}: {cited} not in docs/architectures.md"


def test_every_family_and_model_type_is_written_up() -> None:
    # A model_type normscope claims is named (in backticks) on the page its rules cite.
    from normscope.arch import FAMILIES

    text = ARCHITECTURES.read_text(encoding="utf-8")
    missing = [t for f in FAMILIES for t in f.model_types if f"`{t}`" not in text]
    assert missing == [], f"model types not described in docs/architectures.md: {missing}"


def test_the_config_keys_normscope_reads_are_written_up() -> None:
    from normscope.arch import config

    text = ARCHITECTURES.read_text(encoding="utf-8")
    keys = [
        *config.MTP_CONFIG_KEYS,
        *config.OFFSET_FLAGS,
        *config.NORM_KIND_KEYS,
        *config.OFFSET_KINDS,
    ]
    missing = [k for k in keys if f"`{k}`" not in text]
    assert missing == [], f"config keys not in docs/architectures.md#config-signals: {missing}"


# --- the README against the command line ---------------------------------------------------------
#
# Every command and every option of every command (introspected from the typer app) is in the
# README: in the command's own section (`### `normscope CMD``), or in the table of options the
# commands share, on a row that names the command. Every example command in the README's shell
# blocks is parsed by the command line with its options accepted; an example whose inputs exist
# in a clone (the bundled fixtures, files the README itself writes out) also runs, and exits with
# the code its comment states (`# exit 1: ...`; no code stated: 0). Examples on inputs a test
# cannot have (a Hub repo, a bucket, `path/to/checkpoint`) are parsed only.

README = REPO_ROOT / "README.md"
SHARED = "Options every command shares"
INPUT_PARAMS = ("source", "sources", "a", "b", "baseline", "rules", "config", "events")


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _group() -> Any:
    import typer.main

    from normscope.cli import app

    return typer.main.get_command(app)


def _commands() -> dict[str, Any]:
    return dict(_group().commands)


def _flags(params: list[Any]) -> list[str]:
    """Every option string (`-f`, `--format`, `--no-expect-init`) of a command's parameters."""
    return [
        o for p in params if p.param_type_name == "option" for o in [*p.opts, *p.secondary_opts]
    ]


def _has_flag(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def _section(name: str) -> str:
    """The README's text from `### `normscope NAME` to the next `## ` or `### ` heading."""
    lines = _readme().splitlines()
    start = next(
        (i for i, line in enumerate(lines) if line.startswith(f"### `normscope {name}")), None
    )
    assert start is not None, f"README.md has no section `### `normscope {name} ...``"
    end = next(
        (j for j in range(start + 1, len(lines)) if re.match(r"#{2,3} ", lines[j])), len(lines)
    )
    return "\n".join(lines[start:end])


def _shared_rows() -> list[tuple[list[str], set[str]]]:
    """(flags, commands) per row of the shared-options table; `normscope` names the group."""
    text = _readme()
    assert f"### {SHARED}" in text, f"README.md has no section `### {SHARED}`"
    table = text.split(f"### {SHARED}", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`-"):
            continue
        flags = re.findall(r"`(-[\w-]+)`", cells[0])
        rows.append((flags, set(re.findall(r"[\w-]+", cells[1]))))
    return rows


def test_every_command_and_option_is_in_the_readme() -> None:
    shared = _shared_rows()
    undocumented = []
    for name, command in _commands().items():
        section = _section(name)
        for flag in _flags(command.params):
            in_table = any(flag in flags and name in cmds for flags, cmds in shared)
            if not (_has_flag(section, flag) or in_table):
                undocumented.append(f"{name} {flag}")
    undocumented += [  # `normscope --version`, `-v`
        f"normscope {flag}"
        for flag in _flags(_group().params)
        if not any(flag in flags and "normscope" in cmds for flags, cmds in shared)
    ]
    assert undocumented == [], (
        f"options the README does not document: {undocumented}; name each in the command's "
        f"section (### `normscope CMD`) or on its row of the table `### {SHARED}`"
    )


def test_the_shared_options_table_names_no_option_a_command_lacks() -> None:
    commands = {**_commands(), "normscope": _group()}
    ghosts = []
    for flags, names in _shared_rows():
        for name in sorted(names & set(commands)):
            ghosts += [f"{name} {f}" for f in flags if f not in _flags(commands[name].params)]
        unknown = names - set(commands)
        assert not unknown, f"shared-options row {flags} names no command: {sorted(unknown)}"
    assert ghosts == [], f"README's shared-options table lists options that do not exist: {ghosts}"


def test_readme_schema_version_is_the_outputs() -> None:
    from normscope.schema.scan import SCHEMA_VERSION

    stated = re.findall(r"`schema_version` is (\d+)", _readme())
    assert stated == [str(SCHEMA_VERSION)], f"README says schema_version {stated}"


def _examples() -> list[tuple[int, list[str], str]]:
    """(line, argv after `normscope`, comment) of every command in the README's shell blocks."""
    out: list[tuple[int, list[str], str]] = []
    lang = None
    for number, line in enumerate(_readme().splitlines(), 1):
        if line.startswith("```"):
            lang = line[3:].strip() if lang is None else None
            continue
        if lang not in ("bash", "sh", "yaml"):
            continue
        code, _, comment = re.sub(r"^\s*(- )?", "", line).partition("  #")
        for segment in re.split(r"&&|;|\|(?!\|)", code):
            words = shlex.split(segment)
            while words and re.match(r"^[A-Z_]+=", words[0]):
                words = words[1:]  # VAR=value normscope ...
            if words[:3] in (["python", "-m", "normscope"], ["python3", "-m", "normscope"]):
                words = ["normscope", *words[3:]]
            if words[:1] != ["normscope"] or len(words) < 2:
                continue
            for i, word in enumerate(words):
                if word in (">", ">>", "<", "2>"):
                    words = words[:i]
                    break
            out.append((number, words[1:], comment))
    return out


def _readme_files(folder: Path) -> None:
    """Write the files the README spells out (a ```toml block opening `# NAME.toml`)."""
    for block in re.findall(r"```toml\n(.*?)```", _readme(), flags=re.DOTALL):
        if m := re.match(r"# ([\w.-]+\.toml)\b", block):
            (folder / m[1]).write_text(block, encoding="utf-8")


def _inputs(argv: list[str]) -> list[str]:
    """The input paths the command line parsed out of an example (sources, baseline, rules...)."""
    command = _commands()[argv[0]]
    ctx = command.make_context(argv[0], list(argv[1:]))  # raises on an unknown option or value
    values = []
    for key in INPUT_PARAMS:
        value = ctx.params.get(key)
        if value is None:
            continue
        values += [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
    return values


EXAMPLES = _examples()


@pytest.mark.parametrize(
    ("line", "argv", "comment"), EXAMPLES, ids=[f"README.md:{n}" for n, _, _ in EXAMPLES]
)
def test_every_readme_example_runs(
    line: int, argv: list[str], comment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert argv[0] in _commands(), f"README.md:{line}: no command {argv[0]!r}"
    (tmp_path / "fixtures").symlink_to(REPO_ROOT / "fixtures", target_is_directory=True)
    _readme_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    # `cache --clear` clears only this test's cache; `--format github` writes no CI summary.
    monkeypatch.setenv("NORMSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    inputs = _inputs(argv)
    fixtures = [p for p in inputs if p.startswith("fixtures/")]
    assert all(Path(p).exists() for p in fixtures), f"README.md:{line}: {fixtures}"
    if not all(Path(p).exists() for p in inputs):
        return  # a Hub repo, a bucket, your checkpoint: parsed above, options accepted
    from typer.testing import CliRunner

    from normscope.cli import app

    result = CliRunner().invoke(app, argv)
    stated = re.search(r"\bexit (\d+)", comment)
    expected = int(stated[1]) if stated else 0
    assert result.exit_code == expected, (
        f"README.md:{line}: normscope {shlex.join(argv)} exited {result.exit_code}, the README "
        f"implies {expected}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    )


def test_the_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the first Python block is the API's; the later ones are run by the tests of their
    # features (tests/test_memory.py, tests/test_integrations.py)
    block = re.findall(r"```python\n(.*?)```", _readme(), flags=re.DOTALL)[0]
    (tmp_path / "fixtures").symlink_to(REPO_ROOT / "fixtures", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(block, "README.md (Python example)", "exec"), scope)
    assert scope["final"].ratio == pytest.approx(0.270, abs=5e-4)  # the headline of the README
    assert {type(scope[k]).__name__ for k in ("report", "changes", "run", "verdict")} == {
        "Report",
        "DiffReport",
        "SeriesReport",
        "CheckReport",
    }


@pytest.mark.parametrize("name", ["scan", "diff", "series", "check"])
def test_the_readme_states_each_api_signature(name: str) -> None:
    import inspect

    import normscope

    text = " ".join(_readme().split())  # the signatures wrap over lines
    stated = re.search(rf"`{name}\(([^`]*)\)`", text)
    assert stated, f"README.md states no signature `{name}(...)`"
    words = [w.strip().lstrip("*").split("=")[0] for w in stated[1].split(",")]
    real = list(inspect.signature(getattr(normscope, name)).parameters)
    assert [w for w in words if w] == real, f"README's {name}{tuple(words)}: the API has {real}"


def test_the_readme_json_keys_are_the_outputs() -> None:
    import json

    from typer.testing import CliRunner

    from normscope.cli import app

    text = " ".join(_readme().split())
    sentence = text.split("`normscope scan --format json` prints one object: ", 1)[1]
    sentence = sentence.split("`warnings`.", 1)[0] + "`warnings`"
    sentence = re.sub(r"\([^)]*\)", "", sentence)  # "(count per band)"
    top = re.findall(r"`(\w+)`(?: \{([^}]*)\}| \[)?", re.sub(r"\[[^\]]*\]", "[", sentence))
    showcase = str(REPO_ROOT / "fixtures" / "deepseek-v3-mtp")
    data = json.loads(CliRunner().invoke(app, ["scan", showcase, "-f", "json"]).stdout)
    assert [k for k, _ in top] == list(data), "README's top-level JSON keys"
    for key, inner in top:
        if inner:
            assert [w.strip() for w in inner.split(",")] == list(data[key]), f"README's `{key}`"


def test_the_readme_test_command_is_what_ci_runs() -> None:
    # PROTOCOL: the README's test command and .ci/run stay identical (a new test package goes
    # into both).
    def commands(text: str) -> list[str]:
        return [
            line
            for line in text.splitlines()
            if line.startswith("python3 -m venv") and line.rstrip().endswith("&& pytest")
        ]

    ci = commands((REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    assert len(ci) == 1, ".ci/run runs no (or more than one) test command"
    assert commands(_readme()) == ci, "README's test command differs from .ci/run's"
