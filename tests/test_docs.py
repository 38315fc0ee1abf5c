"""Docs that cannot drift: the pages are checked against the code, as sqlite-utils' docs tests do.

- ARCHITECTURE.md has one row per module of `normscope/` (and none for a module that does not
  exist), each on the floor `tests/test_layout.py` gives it, and stays one page (<= 120 lines);
- every link between the project's Markdown pages, and every citation of `docs/architectures.md`
  in the code, points at a file and a section that exist.

A new module fails here until it has its row: saying what it owns is part of adding it.
"""

from __future__ import annotations

import re
from pathlib import Path

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
    assert missing == [], f"modules without a row in ARCHITECTURE.md: {missing}"
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
    assert lines <= 120, f"ARCHITECTURE.md has {lines} lines: one page is at most 120"


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
