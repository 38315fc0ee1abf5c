"""Draw a series: ratio vs step of the final and MTP norms, and a layer × step heatmap of a role.

matplotlib is an optional extra (`pip install 'normscope[plot]'`), imported here, inside the
functions, and only when `--plot` is given. Figures are `matplotlib.figure.Figure` objects
rendered by the Agg (PNG) and SVG canvases directly, without pyplot: no global state, no GUI
backend, never a window. Pure: `render_plot` returns the file's bytes; `cli/` writes them.
"""

from __future__ import annotations

import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from normscope.enums import Closed, Module, Role
from normscope.errors import ConfigError
from normscope.render.common import for_people, short_name
from normscope.render.series_text import (
    drift_text,
    fmt_step,
    outlook,
    ratio_text,
    sample_indices,
    trend_label,
)
from normscope.render.trinity import draw_trinity
from normscope.schema import SeriesReport, Thresholds, Trend

if TYPE_CHECKING:
    import numpy as np

INSTALL_HINT = "pip install 'normscope[plot]'"
DPI = 100
WIDTH_IN = 11.0
LINES_HEIGHT_IN = 4.5
HEATMAP_HEIGHT_IN = 3.5
# Line colours (matplotlib's tab10 without green, which is the band's colour).
COLORS = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
BAND_COLOR = "#2ca02c"
EDGE_COLOR = "#d62728"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


class PlotFormat(Closed):
    """What `--plot FILE` writes, by its suffix."""

    png = "png"
    svg = "svg"
    html = "html"


def plot_format(path: str | Path) -> PlotFormat:
    """The format of a `--plot` file from its suffix; ConfigError for any other suffix."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix == "htm":
        suffix = "html"
    try:
        return PlotFormat(suffix)
    except ValueError:
        raise ConfigError(
            f"--plot writes .png, .svg or .html files, not '{Path(path).name}'"
        ) from None


def require_matplotlib() -> None:
    """Raise ConfigError with the install hint when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--plot needs matplotlib, which is not installed", hint=INSTALL_HINT
        ) from None


def parse_role(text: str) -> Role:
    """A `--plot-role` value as a Role; ConfigError listing the roles otherwise."""
    try:
        return Role(text)
    except ValueError:
        raise ConfigError(
            f"unknown role '{text}' for --plot-role",
            hint=f"roles: {', '.join(r.value for r in Role)}",
        ) from None


def heatmap_role(report: SeriesReport, requested: Role | None = None) -> Role | None:
    """The role of the heatmap: the requested one, else mlp_input, else attn_input, if present."""
    present = {r.norm.role for r in report.rows if _in_heatmap(r.norm.module, r.norm.layer)}
    if requested is not None:
        return requested if requested in present else None
    for role in (Role.mlp_input, Role.attn_input):
        if role in present:
            return role
    return None


def _in_heatmap(module: Module, layer: int | None) -> bool:
    return module is Module.main and layer is not None


def plotted_trends(report: SeriesReport) -> list[Trend]:
    """The lines: the final and MTP norms, or the role medians when the model has neither."""
    real = [t for t in report.summary.headline if not t.aggregate]
    return real or list(report.summary.headline)


TRINITY_HEIGHT_IN = 2.6
"""`series --events`: the losses and their gap, under the ratios (the playbook's trinity)."""


def figure_pixels(has_heatmap: bool, has_trinity: bool = False) -> tuple[int, int]:
    """Width and height in pixels of the PNG."""
    height = LINES_HEIGHT_IN + (HEATMAP_HEIGHT_IN if has_heatmap else 0.0)
    height += TRINITY_HEIGHT_IN if has_trinity else 0.0
    return round(WIDTH_IN * DPI), round(height * DPI)


def _heat_matrix(report: SeriesReport, role: Role) -> tuple[list[int], np.ndarray]:
    import numpy as np

    index = {c.path: i for i, c in enumerate(report.checkpoints)}
    cells = [
        (r.norm.layer, index[r.checkpoint], r.norm.ratio)
        for r in report.rows
        if r.norm.role is role and _in_heatmap(r.norm.module, r.norm.layer)
    ]
    layers = sorted({layer for layer, _, _ in cells if layer is not None})
    row_of = {layer: i for i, layer in enumerate(layers)}
    matrix = np.full((len(layers), len(report.checkpoints)), np.nan)
    for layer, column, ratio in cells:
        if layer is not None:
            # Two norms of one role in one layer (rare): show the smaller ratio, the worry.
            current = matrix[row_of[layer], column]
            matrix[row_of[layer], column] = ratio if math.isnan(current) else min(current, ratio)
    return layers, matrix


def _label(t: Trend) -> str:

    label = trend_label(t)
    return label if t.aggregate else f"{label} ({short_name(t.name, 32)})"


def _cell_edges(steps: np.ndarray) -> np.ndarray:
    """Heatmap cell edges halfway between steps, so cells line up with the line plot above."""
    import numpy as np

    if len(steps) == 1:
        return np.asarray([steps[0] - 0.5, steps[0] + 0.5])
    middle = (steps[:-1] + steps[1:]) / 2
    return np.concatenate(
        [[steps[0] - (middle[0] - steps[0])], middle, [steps[-1] + (steps[-1] - middle[-1])]]
    )


def build_figure(report: SeriesReport, role: Role | None) -> Any:
    """The matplotlib Figure: ratio vs step on top, the heatmap of `role` below (if any)."""
    import numpy as np
    from matplotlib.figure import Figure

    heat = _heat_matrix(report, role) if role is not None else None
    if heat is not None and not heat[0]:
        heat = None
    trinity = report.trinity is not None
    width_px, height_px = figure_pixels(heat is not None, trinity)
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    steps = np.asarray([c.step for c in report.checkpoints], dtype=np.float64)
    heights = [LINES_HEIGHT_IN]
    heights += [HEATMAP_HEIGHT_IN] if heat is not None else []
    heights += [TRINITY_HEIGHT_IN] if trinity else []
    axes = fig.subplots(len(heights), 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0]
    _draw_lines(axes[0], report, steps)
    if heat is not None and role is not None:
        _draw_heatmap(fig, axes[1], report, steps, role, *heat)
        axes[0].set_xlim(left=float(_cell_edges(steps)[0]))  # no empty strip left of cell 1
    if trinity:
        draw_trinity(axes[-1], report, steps)
    return fig


def _draw_lines(ax: Any, report: SeriesReport, steps: np.ndarray) -> None:
    """The ratio of each plotted norm by step over the band, its trend and where it heads."""
    th = report.summary.thresholds
    _draw_bands(ax, th)
    span = float(steps[-1] - steps[0]) if len(steps) > 1 else 1.0
    right = float(steps[-1]) + 0.12 * span  # room to show where each projection heads
    left = float(steps[0]) - 0.02 * span
    if len(steps) == 1:
        left, right = float(steps[0]) - 0.5, float(steps[0]) + 0.5
    values = _draw_ratios(ax, report, steps, right)
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 50:
        ax.set_yscale("log")  # e.g. offset norms at a few hundred next to collapsed ones
    else:
        low = min([th.low, *values])
        high = max([th.high, *values])
        pad = 0.06 * (high - low)
        ax.set_ylim(max(0.0, low - pad), high + pad)
    ax.set_xlim(left, right)
    _label_axes(ax, report, steps)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, framealpha=0.85)


def _draw_bands(ax: Any, th: Thresholds) -> None:
    """Under the lines: the act band [low, high], the balanced band lightly, the edges, 1.0."""
    ax.axhspan(th.low, th.high, color=BAND_COLOR, alpha=0.10, lw=0, gid="band")
    ax.axhspan(
        th.balanced_low, th.balanced_high, color=BAND_COLOR, alpha=0.08, lw=0, gid="balanced"
    )
    for edge in (th.low, th.high):
        ax.axhline(edge, color=EDGE_COLOR, lw=0.9, ls="--", alpha=0.6)
    ax.axhline(1.0, color="#555555", lw=0.6, ls=":", alpha=0.7)


def _draw_ratios(ax: Any, report: SeriesReport, steps: np.ndarray, right: float) -> list[float]:
    """One line per plotted trend (and its least-squares trend); the finite values drawn."""
    import numpy as np

    values: list[float] = []
    trends = plotted_trends(report)
    for i, t in enumerate(trends):
        color = COLORS[i % len(COLORS)]
        ys = np.asarray([math.nan if r is None else r for r in t.ratios], dtype=np.float64)
        values += [v for v in ys if math.isfinite(v)]
        label = _label(t)
        if t.projected_crossing_step is not None and t.projected_band is not None:
            label += f" → {t.projected_band.value} ≈ {fmt_step(t.projected_crossing_step)}"
        # Lines at the same value must not hide each other (issue #14): the first drawn is the
        # widest, each later one narrower on top of it, with its own hollow marker, so lines
        # that coincide show as nested stripes and rings; MTP lines are dash-dotted.
        under = len(trends) - 1 - i
        ax.plot(
            steps,
            ys,
            color=color,
            lw=1.2 + 1.1 * under,
            ls="-." if t.module is Module.mtp else "-",
            marker=MARKERS[i % len(MARKERS)] if len(steps) <= 40 else None,
            ms=4 + 2.5 * under,
            mfc=color if under == len(trends) - 1 else "none",
            mew=1.4,
            zorder=2 + i,
            label=label,
            gid=f"ratio-{i}",
        )
        _draw_trend(ax, t, steps, ys, color, right, i, report.summary.window)
    return values


def _label_axes(ax: Any, report: SeriesReport, steps: np.ndarray) -> None:
    """Axis labels, ticks on checkpoint steps (up to 12, never between two), the title."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    th = report.summary.thresholds
    ax.set_ylabel("ratio ‖g‖₂ / √d")
    ax.set_xlabel(_step_label(report))
    picked = sample_indices(len(steps), 12)
    ax.xaxis.set_major_locator(FixedLocator([float(steps[k]) for k in picked]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: fmt_step(x)))
    ax.xaxis.set_tick_params(labelbottom=True)  # also when the heatmap below shares the axis
    ax.grid(True, axis="x", color="#dddddd", lw=0.6)
    trend = (
        f"; dotted: the least-squares trend of the last {report.summary.window} checkpoints, "
        "dashed: where it heads"
        if report.summary.window > 1
        else ""
    )
    ax.set_title(
        f"{report.model.model_type or report.model.family}: ratio by step "
        f"(band [{th.low:g}, {th.high:g}] shaded, balanced [{th.balanced_low:g}, "
        f"{th.balanced_high:g}] darker)\n{trend.removeprefix('; ')}",
        loc="left",
        fontsize=10,
    )


def _draw_trend(
    ax: Any,
    t: Trend,
    steps: np.ndarray,
    ys: np.ndarray,
    color: str,
    right: float,
    i: int,
    window: int,
) -> None:
    """The least-squares line over the last `window` checkpoints (dotted), and where it heads
    if it crosses a band edge (dashed, to an x at the crossing)."""
    import numpy as np

    if t.drift_per_1k_steps is None:
        return
    present = np.flatnonzero(np.isfinite(ys))[-window:]
    if len(present) < 2:
        return
    xs, vs = steps[present].astype(np.float64), ys[present]
    slope = t.drift_per_1k_steps / 1000.0
    mean_x, mean_y = float(xs.mean()), float(vs.mean())

    def fit(x: float) -> float:
        return mean_y + (x - mean_x) * slope

    x0, x_last = float(xs[0]), float(xs[-1])
    ax.plot([x0, x_last], [fit(x0), fit(x_last)], color=color, lw=1.3, ls=":", gid=f"trend-{i}")
    if t.projected_crossing_step is not None:
        x1 = min(float(t.projected_crossing_step), right)
        y0 = t.ratio_last
        y1 = y0 + (x1 - x_last) * slope
        ax.plot([x_last, x1], [y0, y1], color=color, lw=1.2, ls=(0, (4, 2)), gid=f"projection-{i}")
        if x1 == float(t.projected_crossing_step):
            ax.plot([x1], [y1], marker="x", ms=7, mew=2, color=color, gid=f"crossing-{i}")


def _step_label(report: SeriesReport) -> str:
    return "step" if report.steps_from.value == "name" else "position in the series"


def _draw_heatmap(
    fig: Any,
    ax: Any,
    report: SeriesReport,
    steps: np.ndarray,
    role: Role,
    layers: list[int],
    matrix: np.ndarray,
) -> None:
    import matplotlib
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    th = report.summary.thresholds
    data = matrix[np.isfinite(matrix) & (matrix > 0)]
    # A colour scale symmetric in log(ratio) around 1: 0.5 is as blue as 2.0 is red, and the
    # balanced band is always inside it.
    reach = max(
        th.balanced_high,
        1 / th.balanced_low,
        float(data.max()) if data.size else 1.0,
        1 / float(data.min()) if data.size else 1.0,
    )
    lo, hi = 1 / reach, reach
    norm = LogNorm(vmin=lo, vmax=hi)
    shown = np.where(np.isfinite(matrix) & (matrix <= 0), lo, matrix)  # 0: collapsed
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#bbbbbb")
    rows = np.arange(len(layers) + 1) - 0.5
    ax.set_facecolor("#bbbbbb")  # no data right of the last checkpoint, as for NaN cells
    mesh = ax.pcolormesh(
        _cell_edges(steps), rows, np.ma.masked_invalid(shown), cmap=cmap, norm=norm
    )
    mesh.set_gid("heatmap")
    ticks = sorted({layers[round(k)] for k in np.linspace(0, len(layers) - 1, min(8, len(layers)))})
    ax.yaxis.set_major_locator(FixedLocator([layers.index(t) for t in ticks]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: str(layers[round(y)])))
    ax.set_ylabel("layer")
    ax.set_xlabel(_step_label(report))
    ax.set_title(f"{role.value} ratio by layer and step (white = 1)", loc="left", fontsize=10)
    bar = fig.colorbar(mesh, ax=ax, location="bottom", fraction=0.08, aspect=60, pad=0.02)
    bar.set_label("ratio (log scale)")
    edges = [v for v in (th.low, th.balanced_low, 1.0, th.balanced_high, th.high) if lo <= v <= hi]
    # The scale's ends, unless they would print on top of a band edge.
    ends = [
        v for v in (lo, hi) if all(abs(math.log(v / e)) > 0.08 * math.log(hi / lo) for e in edges)
    ]
    bar.ax.xaxis.set_minor_locator(NullLocator())
    bar.set_ticks(sorted({*ends, *edges}))
    bar.ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    for edge in (th.low, th.high):
        if lo <= edge <= hi:
            bar.ax.axvline(edge, color="black", lw=1.0, ls="--")


def render_plot(report: SeriesReport, fmt: PlotFormat, role: Role | None = None) -> bytes:
    """The bytes of the plot file: a PNG, an SVG, or an HTML page embedding the SVG."""
    import matplotlib

    fig = build_figure(report, heatmap_role(report, role))
    # Reproducible files: a fixed SVG id salt and no creation date.
    with matplotlib.rc_context({"svg.hashsalt": "normscope"}):
        buffer = io.BytesIO()
        if fmt is PlotFormat.png:
            fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
            return buffer.getvalue()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue().decode("utf-8")
    if fmt is PlotFormat.svg:
        return svg.encode("utf-8")
    if fmt is PlotFormat.html:
        return render_html(report, svg).encode("utf-8")
    raise AssertionError(fmt)  # pragma: no cover - exhaustive over PlotFormat


_HTML_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; max-width: 1150px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.2em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; font-family: ui-monospace, monospace; }
.collapse, .explosion, .nonfinite { color: #b00; font-weight: bold; }
.shrink, .grow { color: #a60; }
.balanced { color: #070; }
svg { max-width: 100%; height: auto; }
"""


def _trend_row(t: Trend) -> str:
    """One headline trend as a row of the page's trend table."""
    e = html.escape
    left = "-" if t.first_out_of_band_step is None else str(t.first_out_of_band_step)
    projected = (
        f"{t.projected_band.value} at ≈ {fmt_step(t.projected_crossing_step)}"
        if t.projected_band is not None and t.projected_crossing_step is not None
        else "-"
    )
    return (
        f"<tr><td>{e(t.name)}</td><td>{ratio_text(t.ratio_first)}</td>"
        f"<td>{ratio_text(t.ratio_last)}</td>"
        f'<td class="{t.band_last.value}">{t.band_last.value}</td><td>{left}</td>'
        f"<td>{drift_text(t.drift_per_1k_steps)}</td><td>{e(projected)}</td></tr>"
    )


@for_people
def render_html(report: SeriesReport, svg: str) -> str:
    """A self-contained page: the SVG inline, the trend table, the ratios, the outlook."""

    e = html.escape
    svg = svg[svg.index("<svg") :]  # drop the XML declaration and DOCTYPE
    th = report.summary.thresholds
    rows = [_trend_row(t) for t in report.summary.headline]
    picked = sample_indices(len(report.checkpoints), 12)
    head = "".join(f"<th>{report.checkpoints[i].step}</th>" for i in picked)
    ratio_rows = [
        f"<tr><td>{e(t.name)}</td>"
        + "".join(f"<td>{ratio_text(t.ratios[i])}</td>" for i in picked)
        + "</tr>"
        for t in report.summary.headline
    ]
    sentences = "".join(
        f"<li>{e(outlook(t))}</li>" for t in report.summary.headline if not t.aggregate
    )
    m = report.model
    facts = (
        f"{e(', '.join(report.source))} · {e(m.model_type or m.family)} · "
        f"{len(report.checkpoints)} checkpoints, steps {report.checkpoints[0].step} … "
        f"{report.checkpoints[-1].step} · {len(report.skipped)} skipped · band "
        f"[{th.low:g}, {th.high:g}]"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>normscope series: {e(", ".join(report.source))}</title>
<style>{_HTML_STYLE}</style>
</head>
<body>
<h1>normscope series</h1>
<p>{facts}</p>
<figure>
{svg}
</figure>
<h2>Trends</h2>
<table>
<thead><tr><th>norm</th><th>first</th><th>last</th><th>band now</th><th>left band at step</th>
<th>drift / 1k steps</th><th>projected</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
<h2>Ratio ‖g‖₂/√d by step</h2>
<table>
<thead><tr><th>norm</th>{head}</tr></thead>
<tbody>
{chr(10).join(ratio_rows)}
</tbody>
</table>
<ul>{sentences}</ul>
<p>normscope {e(report.normscope_version)}</p>
</body>
</html>
"""
