"""report.py: renderers on hand-built Reports, checked against exact expected text.

The JSON keys and the CSV header are a contract with every script that reads normscope output;
the table and Markdown are for people, pinned by exact strings and a golden file
(`pytest --update-golden` rewrites tests/golden/).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable

import pandas as pd
import pytest
from rich.console import Console

from normscope.frames import rows_frame
from normscope.render.common import fmt, human_bytes, render_json, short_name, to_dict
from normscope.render.scan import (
    NORM_FIELDS,
    render_csv,
    render_markdown,
    render_table,
    summarize_roles,
)
from normscope.schema import (
    Band,
    BandCounts,
    Group,
    Headline,
    IOStats,
    Kind,
    ModelInfo,
    Module,
    NormStats,
    Outlier,
    Parametrization,
    Report,
    Role,
    Summary,
    Thresholds,
    Tower,
)
from normscope.scope import parse_scope

# The JSON/CSV contract of issue #2, written out rather than read from the code (tower and
# stack: schema_version 4, issue #25).
EXPECTED_NORM_FIELDS = [
    "name",
    "module",
    "mtp_depth",
    "layer",
    "tower",
    "stack",
    "role",
    "group",
    "kind",
    "parametrization",
    "stored_offset",
    "dim",
    "l2",
    "ratio",
    "mean",
    "std",
    "min",
    "max",
    "negative",
    "outliers",
    "bias_l2",
    "bias_abs_max",
    "identity",
    "band",
    "peer_median",
    "anomaly",
]
NAN, INF = math.nan, math.inf


def norm(name: str, **kw: object) -> NormStats:
    values: dict[str, object] = {
        "name": name,
        "module": Module.main,
        "mtp_depth": None,
        "layer": None,
        "tower": Tower.text,
        "stack": None,
        "role": Role.attn_input,
        "group": Group.input,
        "kind": Kind.rmsnorm,
        "parametrization": Parametrization.standard,
        "stored_offset": 0.0,
        "dim": 4,
        "l2": 2.0,
        "ratio": 1.0,
        "mean": 1.0,
        "std": 0.0,
        "min": 1.0,
        "max": 1.0,
        "negative": 0,
        "outliers": (),
        "bias_l2": None,
        "bias_abs_max": None,
        "identity": True,
        "band": Band.balanced,
    }
    values.update(kw)
    return NormStats(**values)  # type: ignore[arg-type]


LAYER0 = norm("model.layers.0.input_layernorm.weight", layer=0)
LAYER1 = norm(
    "model.layers.1.input_layernorm.weight",
    layer=1,
    l2=0.5,
    ratio=0.25,
    mean=0.25,
    std=0.0625,
    min=0.125,
    max=0.375,
    outliers=(Outlier(3, 0.375), Outlier(0, 0.125)),
    identity=False,
    band=Band.collapse,
)
FINAL = norm(
    "model.norm.weight",
    role=Role.final,
    kind=Kind.layernorm,
    l2=3.0,
    ratio=1.5,
    mean=1 / 3,
    std=math.pi,
    min=-0.5,
    max=2.75,
    negative=1,
    outliers=(Outlier(1, 2.75),),
    bias_l2=0.1 + 0.2,
    bias_abs_max=0.25,
    identity=False,
    band=Band.grow,
)
ENORM = norm(
    "mtp.layers.0.enorm.weight",
    module=Module.mtp,
    mtp_depth=1,
    role=Role.mtp_embedding,
    parametrization=Parametrization.offset,
    l2=NAN,
    ratio=NAN,
    mean=NAN,
    std=NAN,
    min=-INF,
    max=INF,
    negative=1,
    outliers=(Outlier(2, NAN), Outlier(3, INF)),
    identity=False,
    band=Band.nonfinite,
)


def make_report(
    norms: tuple[NormStats, ...] = (LAYER0, LAYER1, FINAL, ENORM), **kw: object
) -> Report:
    values: dict[str, object] = {
        "schema_version": 1,
        "normscope_version": "0.1.0",
        "source": "/ckpt/tiny",
        "model": ModelInfo("llama", "llama", 4, 2, 1),
        "io": IOStats(
            bytes_read=1234, bytes_total=5_000_000, metadata_bytes=100, files=2, seconds=0.25
        ),
        "norms": norms,
        "summary": Summary(
            bands=BandCounts(collapse=1, balanced=1, grow=1, nonfinite=1),
            out_of_band=2,
            scope="final,mtp",
            gated_out_of_band=1,
            headline=(
                Headline("model.norm.weight", Role.final, None, 1.5, Band.grow),
                Headline("mtp.layers.0.enorm.weight", Role.mtp_embedding, 1, NAN, Band.nonfinite),
            ),
            thresholds=Thresholds(),
        ),
        "warnings": ("config.json advertises 2 MTP depth(s) but the checkpoint holds norms of 1",),
    }
    values.update(kw)
    return Report(**values)  # type: ignore[arg-type]


REPORT = make_report()


# --- JSON -----------------------------------------------------------------------------------------


def test_json_top_level_keys_in_order() -> None:
    data = json.loads(render_json(REPORT))
    assert list(data) == [
        "schema_version",
        "normscope_version",
        "source",
        "model",
        "io",
        "norms",
        "summary",
        "warnings",
    ]
    assert list(data["model"]) == ["model_type", "family", "hidden_size", "num_layers", "mtp_depth"]
    assert list(data["io"]) == [
        "bytes_read",
        "bytes_total",
        "metadata_bytes",
        "files",
        "seconds",
        "requests",
        "bytes_transferred",
    ]
    assert {"bands", "out_of_band"} <= set(data["summary"])
    assert data["warnings"] == list(REPORT.warnings)


def test_json_norm_keys_are_the_normstats_fields() -> None:
    assert list(NORM_FIELDS) == EXPECTED_NORM_FIELDS
    for obj in json.loads(render_json(REPORT))["norms"]:
        assert list(obj) == EXPECTED_NORM_FIELDS


def test_json_norm_exact() -> None:
    final = json.loads(render_json(REPORT))["norms"][2]
    assert final == {
        "name": "model.norm.weight",
        "module": "main",
        "mtp_depth": None,
        "layer": None,
        "tower": "text",
        "stack": None,
        "role": "final",
        "group": "input",
        "kind": "layernorm",
        "parametrization": "standard",
        "stored_offset": 0.0,
        "dim": 4,
        "l2": 3.0,
        "ratio": 1.5,
        "mean": 1 / 3,
        "std": math.pi,
        "min": -0.5,
        "max": 2.75,
        "negative": 1,
        "outliers": [{"index": 1, "value": 2.75}],
        "bias_l2": 0.1 + 0.2,
        "bias_abs_max": 0.25,
        "identity": False,
        "band": "grow",
        "peer_median": None,
        "anomaly": None,
    }


def test_json_nonfinite_is_null() -> None:
    text = render_json(REPORT)
    for token in ("NaN", "Infinity"):
        assert token not in text
    enorm = json.loads(text)["norms"][3]
    for key in ("l2", "ratio", "mean", "std", "min", "max"):
        assert enorm[key] is None
    assert enorm["outliers"] == [{"index": 2, "value": None}, {"index": 3, "value": None}]
    assert enorm["band"] == "nonfinite"
    assert enorm["mtp_depth"] == 1 and enorm["layer"] is None
    headline = json.loads(text)["summary"]["headline"]
    assert headline[1]["ratio"] is None


def test_json_is_plain_and_ends_with_newline() -> None:
    text = render_json(REPORT)
    assert "\x1b" not in text
    assert text.endswith("}\n")
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_to_dict_matches_json() -> None:
    assert json.loads(render_json(REPORT)) == json.loads(json.dumps(to_dict(REPORT)))


def test_json_summary_exact() -> None:
    summary = json.loads(render_json(REPORT))["summary"]
    assert summary["bands"] == {
        "collapse": 1,
        "shrink": 0,
        "balanced": 1,
        "grow": 1,
        "explosion": 0,
        "nonfinite": 1,
    }
    assert summary["out_of_band"] == 2
    assert summary["gated_out_of_band"] == 1
    assert summary["scope"] == "final,mtp"
    assert summary["thresholds"] == {
        "low": 0.4,
        "high": 1.8,
        "balanced_low": 0.9,
        "balanced_high": 1.12,
    }


# --- CSV ------------------------------------------------------------------------------------------


def test_csv_header_and_rows() -> None:
    lines = render_csv(REPORT).splitlines()
    assert lines[0] == ",".join(EXPECTED_NORM_FIELDS)
    assert len(lines) == 1 + len(REPORT.norms)
    assert lines[2] == (
        "model.layers.1.input_layernorm.weight,main,,1,text,,attn_input,input,rmsnorm,standard,0.0,4,"
        '0.5,0.25,0.25,0.0625,0.125,0.375,0,"[{""index"": 3, ""value"": 0.375}, '
        '{""index"": 0, ""value"": 0.125}]",,,False,collapse,,'
    )
    assert lines[3] == (
        "model.norm.weight,main,,,text,,final,input,layernorm,standard,0.0,4,3.0,1.5,"
        f"{1 / 3!r},{math.pi!r},-0.5,2.75,1,"
        '"[{""index"": 1, ""value"": 2.75}]",'
        f"{0.1 + 0.2!r},0.25,False,grow,,"
    )
    # Nonfinite numbers are empty cells, like null in JSON.
    assert lines[4] == (
        "mtp.layers.0.enorm.weight,mtp,1,,text,,mtp_embedding,input,rmsnorm,offset,0.0,4,,,,,,,1,"
        '"[{""index"": 2, ""value"": null}, {""index"": 3, ""value"": null}]",,,False,nonfinite,,'
    )


def test_csv_is_plain() -> None:
    text = render_csv(REPORT)
    assert "\x1b" not in text
    assert "\r" not in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["name"] for r in rows] == [n.name for n in REPORT.norms]


def test_csv_and_json_round_trip_at_full_precision() -> None:
    frame = pd.read_csv(io.StringIO(render_csv(REPORT)))
    objects = json.loads(render_json(REPORT))["norms"]
    assert list(frame.columns) == EXPECTED_NORM_FIELDS
    for i, n in enumerate(REPORT.norms):
        for key in ("l2", "ratio", "mean", "std", "min", "max", "bias_l2", "bias_abs_max"):
            value = getattr(n, key)
            from_csv = frame.at[i, key]
            from_json = objects[i][key]
            if value is None or not math.isfinite(value):
                assert pd.isna(from_csv) and from_json is None, key
            else:
                assert from_csv == value and from_json == value, (key, from_csv, value)
        assert frame.at[i, "dim"] == n.dim and frame.at[i, "negative"] == n.negative
        assert json.loads(frame.at[i, "outliers"]) == objects[i]["outliers"]
        assert bool(frame.at[i, "identity"]) is n.identity
        assert frame.at[i, "band"] == n.band.value


def test_to_frame_columns() -> None:
    frame = REPORT.to_frame()
    assert list(frame.columns) == EXPECTED_NORM_FIELDS
    assert len(frame) == 4
    assert str(frame["layer"].dtype) == "Int64" and str(frame["mtp_depth"].dtype) == "Int64"
    assert frame["layer"].tolist()[:2] == [0, 1]
    assert frame["role"].tolist() == ["attn_input", "attn_input", "final", "mtp_embedding"]
    assert frame.equals(rows_frame(REPORT.norms, NormStats))


def test_empty_report_renders() -> None:
    empty = make_report(norms=())
    assert render_csv(empty).splitlines() == [",".join(EXPECTED_NORM_FIELDS)]
    assert json.loads(render_json(empty))["norms"] == []
    assert list(empty.to_frame().columns) == EXPECTED_NORM_FIELDS


# --- Markdown -------------------------------------------------------------------------------------

EXPECTED_MARKDOWN = "\n".join(
    [
        "### normscope 0.1.0",
        "",
        "- **source**: /ckpt/tiny",
        "- **model**: llama (rules: llama), hidden 4, 2 layers, MTP depth 1",
        "- **headline**: 1 of 2 gated norm(s) out of band, worst MTP 1 embedding nan "
        "(nonfinite); no anomaly; next: normscope check for advice",
        "- **watched**: final norm 1.500 (grow); MTP 1 embedding nan (nonfinite)",
        "- **norms**: 4: 1 collapse, 1 balanced, 1 grow, 1 nonfinite",
        "- **read**: 1.2 kB of 5.0 MB (0.02468%) from 2 file(s) in 0.25 s",
        "",
        "| module | role | count | ratio min | median | max | worst band |",
        "|---|---|--:|--:|--:|--:|---|",
        "| main | attn_input | 2 | 0.250 | 0.625 | 1.000 | collapse |",
        "| main | final | 1 | 1.500 | 1.500 | 1.500 | grow |",
        "| mtp | mtp_embedding | 1 | nan | nan | nan | nonfinite |",
        "",
        "#### Final and MTP norms",
        "",
        "| name | layer | role | gain | dim | ratio | band | mean | std | min | max |",
        "|---|--:|---|---|--:|--:|---|--:|--:|--:|--:|",
        "| `model.norm.weight` | - | final | w | 4 | 1.500 | grow | 0.333 | "
        "3.142 | -0.500 | 2.750 |",
        "| `mtp.layers.0.enorm.weight` | mtp1 | mtp_embedding | 1+w | 4 | "
        "nan | nonfinite | nan | nan | -inf | inf |",
        "",
        "#### Out of band outside the gate scope (not alarms)",
        "",
        "- attn_input: 1 in collapse — typical of trained pre-norm models: the next linear map "
        "absorbs their scale",
        "",
        "#### Warnings",
        "",
        "- config.json advertises 2 MTP depth(s) but the checkpoint holds norms of 1",
        "",
    ]
)


def test_markdown_exact() -> None:
    assert render_markdown(REPORT) == EXPECTED_MARKDOWN


def test_markdown_all_lists_every_norm() -> None:
    text = render_markdown(REPORT, show_all=True)
    assert "#### All norms" in text
    assert "#### Out-of-band norms" not in text
    for n in REPORT.norms:
        assert text.count(f"`{n.name}`") == 1
    assert "\x1b" not in text


# --- table ----------------------------------------------------------------------------------------


def table_text(report: Report, show_all: bool = False, width: int = 100, wide: bool = False) -> str:
    console = Console(record=True, width=width, color_system=None, file=open(os.devnull, "w"))  # noqa: SIM115
    try:
        for renderable in render_table(report, show_all, width, wide=wide):
            console.print(renderable)
        # Trailing spaces are padding, not content: keep them out of the golden files.
        return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"
    finally:
        console.file.close()


def test_table_header_facts() -> None:
    text = table_text(REPORT)
    assert "normscope 0.1.0" in text
    for fact in (
        "/ckpt/tiny",
        "llama (rules: llama), hidden 4, 2 layers, MTP depth 1",
        "final norm 1.500 (grow); MTP 1 embedding nan (nonfinite)",
        "4: 1 collapse, 1 balanced, 1 grow, 1 nonfinite",
        "1.2 kB of 5.0 MB (0.02468%) from 2 file(s) in 0.25 s",
    ):
        assert fact in text, fact


def _line_with(text: str, *words: str) -> str:
    lines = [line for line in text.splitlines() if all(w in line.split() for w in words)]
    assert lines, f"no line with {words} in\n{text}"
    return lines[0]


def test_table_role_summary() -> None:
    text = table_text(REPORT)
    assert "per role" in text
    assert _line_with(text, "main", "attn_input", "2").split() == [
        "main",
        "attn_input",
        "2",
        "0.250",
        "0.625",
        "1.000",
        "collapse",
    ]
    assert _line_with(text, "mtp", "mtp_embedding", "1").split()[-1] == "nonfinite"


def test_table_headline_and_out_of_band_rows() -> None:
    text = table_text(REPORT)
    assert "final and MTP norms" in text
    assert "out of band outside the gate scope" in text
    final = _line_with(text, "model.norm")
    assert final.split() == [
        "model.norm",
        "-",
        "final",
        "1.500",
        "grow",
        "0.333",
        "3.142",
        "-0.500",
        "2.750",
    ]
    # An out-of-band trunk norm outside the gate scope is summarised per role, not listed.
    assert "attn_input: 1 in collapse — typical of trained pre-norm models" in text
    assert "model.layers.1.input_layernorm" not in text
    # A healthy trunk norm is neither a headline nor out of band: not listed by default.
    assert "model.layers.0.input_layernorm" not in text
    # The MTP norm appears once: a norm listed in one table is not repeated in the next. The
    # table names it by its leaf (the layer column says mtp1); --wide by its whole name.
    assert text.count("enorm") == 1
    assert table_text(REPORT, width=200, wide=True).count("mtp.layers.0.enorm") == 1
    assert "offset norm" in text  # the footnote for 1 + w
    assert "\x1b" not in text


def test_table_all_lists_every_norm() -> None:
    text = table_text(REPORT, show_all=True, width=300, wide=True)
    assert "all norms" in text
    for n in REPORT.norms:
        name = short_name(n.name, 200)
        assert text.count(name + " ") + text.count(name + "¹") == 1, n.name


def test_table_fits_width() -> None:
    long_names = tuple(
        norm(
            f"model.language_model.model.layers.{i}.mlp.experts.shared.pre_norm.weight",
            layer=i,
            band=Band.explosion,
            ratio=9.0,
        )
        for i in range(61)
    )
    report = make_report(norms=long_names + (FINAL,))
    text = table_text(report, width=100)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "attn_input: 61 in explosion" in text  # outside the gate scope: one summary line
    wide = render_table(report, False, 100, parse_scope("all"))
    console = Console(record=True, width=100, color_system=None, file=open(os.devnull, "w"))  # noqa: SIM115
    for renderable in wide:
        console.print(renderable)
    console.file.close()
    assert "first 25 of 61" in console.export_text()


def test_table_text_with_brackets_is_not_markup() -> None:
    report = make_report(
        source="/ckpt/[run1]/a[/]b", norms=(norm("model.[/b].norm.weight", role=Role.final),)
    )
    text = table_text(report)
    assert "/ckpt/[run1]/a[/]b" in text
    assert "model.[/b].norm" in text


def test_table_golden(golden: Callable[[str, str], None]) -> None:
    golden("scan_table.txt", table_text(REPORT))


def test_table_all_golden(golden: Callable[[str, str], None]) -> None:
    golden("scan_table_all.txt", table_text(REPORT, show_all=True))


# --- helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (1234567, "1.2 MB"),
        (688.6e9, "688.6 GB"),
        (3e15, "3000.0 TB"),
    ],
)
def test_human_bytes(n: float, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (1.0, "1.000"),
        (0.0625, "0.062"),
        (-0.5, "-0.500"),
        (12345.0, "1.23e+04"),
        (NAN, "nan"),
        (-INF, "-inf"),
    ],
)
def test_fmt(value: float | None, text: str) -> None:
    assert fmt(value) == text


def test_short_name() -> None:
    assert short_name("model.norm.weight") == "model.norm"
    # A cut drops whole dotted parts from the start (the end informs), then characters.
    assert short_name("decoder.layers.0.self_attention.linear_qkv.layer_norm_weight") == (
        "…0.self_attention.linear_qkv.layer_norm"
    )
    assert short_name("post_attention_layernorm", 12) == "…n_layernorm"
    assert short_name("a" * 50, 10) == "…" + "a" * 9


def test_summarize_roles_order_and_worst() -> None:
    rows = summarize_roles(REPORT.norms)
    assert [(r.module, r.role) for r in rows] == [
        ("main", "attn_input"),
        ("main", "final"),
        ("mtp", "mtp_embedding"),
    ]
    assert rows[0].worst is Band.collapse
    assert (rows[0].ratio_min, rows[0].ratio_median, rows[0].ratio_max) == (0.25, 0.625, 1.0)
    assert math.isnan(rows[2].ratio_median)


@pytest.mark.parametrize(
    "data",
    [
        {},
        [],
        {"a": [], "b": {}, "c": [[]]},
        {"x": 'é\u2028\x00\x1f"\\', "y": [1.5, -0.0, 1e300, 5e-324, 1e-07, True, None]},
        {"lone": "\ud800"},  # msgspec refuses this escape: the pure-Python encoder writes it
        {"k\udcff": [{"n": "\udc80"}]},
    ],
)
def test_json_bytes_are_those_of_json_dumps_indent_2(data: object) -> None:
    """render_json re-indents a C-encoded document: byte for byte json.dumps(indent=2)."""
    assert render_json(data) == json.dumps(data, indent=2, allow_nan=False) + "\n"
    assert render_json(REPORT) == json.dumps(to_dict(REPORT), indent=2) + "\n"
