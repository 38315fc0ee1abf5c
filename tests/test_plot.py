"""Tests of `normscope series --plot`: PNG size, SVG series count, HTML page, missing matplotlib.

The series fixtures come from test_series.py (DeepSeek-V3-like checkpoints with one MTP depth:
the plot draws 4 lines, the final norm and the MTP enorm, hnorm and shared_head.norm).
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from test_series import collapse_run, explosion_run, write_run
from typer.testing import CliRunner

from normscope.cli import app
from normscope.render.plot import (
    PlotFormat,
    figure_pixels,
    heatmap_role,
    plot_format,
    plotted_trends,
    render_plot,
)
from normscope.schema import Role
from normscope.series import measure_series

runner = CliRunner()
LINES = 4  # final + MTP enorm, hnorm, shared_head.norm


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG signature and IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_png_has_the_expected_size(tmp_path: Path) -> None:
    run = collapse_run(tmp_path / "run", n=5)
    out = tmp_path / "norms.png"
    result = runner.invoke(app, ["series", str(run), "--plot", str(out), "-o", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert png_size(data) == figure_pixels(True) == (1100, 800)
    assert len(data) > 20_000  # lines, bands and a heatmap, not an empty canvas


def test_png_without_heatmap(tmp_path: Path) -> None:
    run = collapse_run(tmp_path / "run", n=3)
    out = tmp_path / "norms.png"
    result = runner.invoke(app, ["series", str(run), "--plot", str(out), "--plot-role", "qk"])
    assert result.exit_code == 0, result.output
    assert "no layer norms of role qk: the plot has no heatmap" in result.stderr
    assert png_size(out.read_bytes()) == figure_pixels(False) == (1100, 450)


def _ids(svg: str, prefix: str) -> list[str]:
    return re.findall(rf'id="({prefix}[^"]*)"', svg)


def test_svg_has_one_line_per_headline_norm(tmp_path: Path) -> None:
    run = explosion_run(tmp_path / "run")
    out = tmp_path / "norms.svg"
    result = runner.invoke(app, ["series", str(run), "--plot", str(out), "-q"])
    assert result.exit_code == 0, result.output
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml")
    assert _ids(svg, "ratio-") == [f"ratio-{i}" for i in range(LINES)]
    assert _ids(svg, "heatmap") == ["heatmap"]
    assert _ids(svg, "band") == ["band"] and _ids(svg, "balanced") == ["balanced"]
    # the enorm is already out of band: no projection; the others are flat: none either
    assert _ids(svg, "projection-") == []


def test_svg_projection_for_a_drifting_norm(tmp_path: Path) -> None:
    report = measure_series([collapse_run(tmp_path / "run", n=5)])
    svg = render_plot(report, PlotFormat.svg).decode()
    assert _ids(svg, "projection-") == ["projection-0"]  # the final norm heads for collapse
    assert _ids(svg, "crossing-") == []  # at 6k, beyond the 12 % shown past the last step
    assert render_plot(report, PlotFormat.svg) == render_plot(report, PlotFormat.svg)


def test_html_embeds_the_svg_and_a_table(tmp_path: Path) -> None:
    run = collapse_run(tmp_path / "run", n=5)
    out = tmp_path / "norms.html"
    assert runner.invoke(app, ["series", str(run), "--plot", str(out), "-q"]).exit_code == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("<svg") == 1 and "<?xml" not in page
    assert len(_ids(page, "ratio-")) == LINES
    assert "<table>" in page and "<td>model.norm.weight</td>" in page
    assert "final norm: 0.60 → collapse at ≈ step 6k if the trend holds" in page
    # self-contained: no script, stylesheet or image fetched from elsewhere
    assert not re.search(r"<(script|link|img)\b|src=|url\((?!#)", page)


def test_plot_positions_single_checkpoint_and_big_ratios(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [0, 1], name=lambda s: "ab"[s], final=lambda k: 300.0 * k + 1)
    report = measure_series([run / "a", run / "b"])
    png = render_plot(report, PlotFormat.png)
    assert png_size(png) == figure_pixels(True)
    one = measure_series([run / "a"])
    assert png_size(render_plot(one, PlotFormat.png)) == figure_pixels(True)


def test_heatmap_role_choice(tmp_path: Path) -> None:
    report = measure_series([collapse_run(tmp_path / "run", n=2)])
    assert heatmap_role(report) is Role.mlp_input
    assert heatmap_role(report, Role.attn_input) is Role.attn_input
    assert heatmap_role(report, Role.qk) is None
    assert plotted_trends(report)[0].name == "model.norm.weight"


def test_plot_format() -> None:
    assert plot_format("a/b.PNG") is PlotFormat.png
    assert plot_format("x.htm") is PlotFormat.html
    for fmt in PlotFormat:  # every member has a renderer branch
        assert plot_format(f"x.{fmt.value}") is fmt


def test_missing_matplotlib_exits_2_with_the_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = collapse_run(tmp_path / "run", n=2)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    out = tmp_path / "norms.png"
    result = runner.invoke(app, ["series", str(run), "--plot", str(out)])
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: --plot needs matplotlib, which is not installed\n"
        "Hint: pip install 'normscope[plot]'\n"
    )
    assert result.stdout == "" and not out.exists()
    # without --plot, matplotlib is not needed
    assert runner.invoke(app, ["series", str(run), "-q"]).exit_code == 0


def test_matplotlib_is_imported_only_for_plots(tmp_path: Path) -> None:
    run = collapse_run(tmp_path / "run", n=2)
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from normscope.cli import app\n"
        f"r = CliRunner().invoke(app, ['series', {str(run)!r}, '-q', '-f', 'json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'matplotlib' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_trend_lines_markers_and_ticks_on_checkpoint_steps(tmp_path: Path) -> None:
    """The dotted least-squares trend is drawn, lines at one value stay apart, ticks sit on
    checkpoint steps (issue #14)."""
    import re

    report = measure_series([explosion_run(tmp_path / "run")])
    svg = render_plot(report, PlotFormat.svg).decode()
    # Every plotted trend with a drift has its dotted least-squares line.
    drifting = [t for t in plotted_trends(report) if t.drift_per_1k_steps is not None]
    assert drifting
    for i, _ in enumerate(drifting):
        assert f'id="trend-{i}"' in svg
    # The MTP hidden and final norms sit at exactly 1.0 all along, under each other: each has its
    # own marker shape, so both stay visible.
    import matplotlib

    matplotlib.use("Agg")
    from normscope.render.plot import build_figure

    figure = build_figure(report, None)
    lines = [ln for ln in figure.axes[0].get_lines() if str(ln.get_gid()).startswith("ratio-")]
    assert len({ln.get_marker() for ln in lines}) == len(lines)
    # The x ticks are checkpoint steps (0, 100, ..., 500), not round numbers in between.
    ticks = [float(x) for x in figure.axes[0].get_xticks()]
    assert ticks == [float(c.step) for c in report.checkpoints]
    title = figure.axes[0].get_title(loc="left")
    assert re.search(r"dotted: the least-squares trend of the last \d+ checkpoints", title)
