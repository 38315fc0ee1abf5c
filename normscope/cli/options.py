"""The command line's shared parameters, defined once (the huggingface_hub `_cli_utils` pattern).

Each alias is a complete typer parameter: a command's signature is one line per parameter, and
the same flag has the same help text in every command.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

# The enums of the schema are the flags' choices (enums.py imports only the standard library).
from normscope.enums import DEFAULT_HIGH, DEFAULT_LOW, DEFAULT_SCOPE, Closed, Order, Parametrization

EXIT_HELP = """Exit codes: 0 judged and passed; 1 a gate tripped (--fail-on, --max-drift; check: a
violation of error severity); 2 could not judge (usage error, bad path, file or config, unknown
architecture, unwritable output, or a gate whose scope matched no norm); 3 internal error (a bug:
please report it with NORMSCOPE_DEBUG=1 output); 130 interrupted; 143 terminated."""


def epilog(*examples: str) -> str:
    """A command's help epilog: its examples (kept as written: click's `\\b`), then the exit
    codes. tests/test_cli.py parses every example."""
    lines = "\n".join(f"  normscope {e}" for e in examples)
    return f"\b\nExamples:\n{lines}\n\n{EXIT_HELP}"


EXAMPLES = {
    "scan": (
        "scan path/to/checkpoint",
        "scan org/name@main --all",
        "scan ckpt/ -o report.html            # the format follows the extension",
        "scan ckpt/ --fail-on out-of-band     # exit 1 when the final norm is out of band",
    ),
    "diff": (
        "diff run/checkpoint-1000 run/checkpoint-2000",
        "diff base/ tuned/ --fail-on band-change -o changes.json",
        "diff base/ tuned/ --max-drift 0.15 --scope all",
    ),
    "series": (
        "series runs/my-run",
        "series step-100/ step-200/ step-300/ -o norms.csv --plot norms.png",
        "series runs/my-run --fail-on out-of-band --max-drift 0.1",
        "series org/name --revisions 'stage1-step*'",
    ),
    "check": (
        "check ckpt/",
        "check ckpt/ --baseline previous/ --max-drift 0.15 --format github",
        "check ckpt/ -o normscope.xml         # JUnit, from the extension",
        "check --show-config",
    ),
    "fold": (
        "fold ckpt/",
        "fold org/name --dry-run              # the bytes a fold would read",
        "fold ckpt/ --device cuda --max-memory 8GB --experts shared -o fold.json",
    ),
    "cache": ("cache", "cache --clear"),
}
"""Each command's help examples (argv after `normscope`; `  # ...` is a comment)."""


class OutputFormat(Closed):
    """Formats of `scan`, `diff` and `series`."""

    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"
    html = "html"


class CheckFormat(Closed):
    """Formats of `check`."""

    text = "text"
    json = "json"
    junit = "junit"
    github = "github"
    html = "html"


class FailOn(Closed):
    """What makes `scan` (and `series`) exit 1."""

    never = "never"
    out_of_band = "out-of-band"


class SeriesExecutor(Closed):
    """Where `series` measures its checkpoints."""

    local = "local"
    dask = "dask"


class DiffFailOn(Closed):
    """What makes `diff` exit 1."""

    never = "never"
    band_change = "band-change"
    out_of_band = "out-of-band"


SourceArg = Annotated[
    str,
    typer.Argument(
        metavar="SOURCE",
        help="A .safetensors file, a directory of shards, a DCP save, a Hub model repo "
        "(org/name[@revision], hf://org/name, or its https://huggingface.co/ page), or an "
        "object-store URL (s3://, gs://, az://, file://).",
        show_default=False,
    ),
]
RevisionOpt = Annotated[
    str | None,
    typer.Option(
        "--revision",
        metavar="REV",
        help="Branch, tag or commit of Hub repo sources (same as SOURCE@REVISION).",
        show_default=False,
    ),
]
FORMAT_HELP = (
    "Output format [table, or what -o's extension names: .json, .csv, .md, .html; a --format "
    "that contradicts it is refused]."
)

FormatOpt = Annotated[
    OutputFormat | None,
    typer.Option("--format", "-f", help=FORMAT_HELP, show_default=False),
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output", "-o", metavar="FILE", help="Write the output to this file ('-' for stdout)."
    ),
]
AllOpt = Annotated[bool, typer.Option("--all", help="List every norm in the table.")]
WideOpt = Annotated[
    bool,
    typer.Option(
        "--wide",
        help="Tables: full tensor names and every column, however wide (the width otherwise "
        "follows the terminal or $COLUMNS; pipes and -o files get 80 and 120).",
    ),
]
LowOpt = Annotated[
    float | None,
    typer.Option(
        "--low",
        metavar="RATIO",
        help=f"Ratio below which a norm has collapsed [{DEFAULT_LOW:g}, or the config's low].",
        show_default=False,
    ),
]
HighOpt = Annotated[
    float | None,
    typer.Option(
        "--high",
        metavar="RATIO",
        help=f"Ratio above which a norm has exploded [{DEFAULT_HIGH:g}, or the config's high].",
        show_default=False,
    ),
]
ParamOpt = Annotated[
    Parametrization | None,
    typer.Option("--parametrization", help="Override the architecture rules for every norm."),
]
ScopeOpt = Annotated[
    str | None,
    typer.Option(
        "--scope",
        metavar="SCOPE",
        help=f"Norms the gate looks at: '{DEFAULT_SCOPE}' (default, or the config's scope), "
        "'all', 'role=qk', 'layer>=40', 'module=mtp', 'name=GLOB'; ',' is or, '&' is and.",
        show_default=False,
    ),
]
MaxDriftOpt = Annotated[
    float | None,
    typer.Option(
        "--max-drift", metavar="X", help="Largest allowed relative change ‖g−g_base‖/‖g_base‖."
    ),
]
RulesOpt = Annotated[
    Path | None,
    typer.Option(
        "--rules",
        metavar="FILE.toml",
        help="Architecture rules for names normscope does not know (README: adding an "
        "architecture); tried before the built-in rules and [tool.normscope.rules].",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No warnings on stderr.")]
NoCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Parse local checkpoints' headers again rather than reuse the header cache "
        "(also: NORMSCOPE_NO_CACHE=1).",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        metavar="TOKEN",
        help="A Hugging Face token for Hub sources [default: HF_TOKEN, else the one of "
        "`hf auth login`]. Sent to the Hub only; never printed or written into a report.",
        show_default=False,
    ),
]
ScanFailOpt = Annotated[
    FailOn, typer.Option("--fail-on", help="Exit 1 when a norm in --scope is out of band.")
]

# --- diff ---------------------------------------------------------------------------------------
DiffA = Annotated[
    str, typer.Argument(metavar="A", help="The earlier (or base) checkpoint.", show_default=False)
]
DiffB = Annotated[
    str, typer.Argument(metavar="B", help="The later (or changed) checkpoint.", show_default=False)
]
DiffFailOpt = Annotated[
    DiffFailOn,
    typer.Option("--fail-on", help="Exit 1 on a band change, or on B out of band (in scope)."),
]

# --- check --------------------------------------------------------------------------------------
CheckSourceArg = Annotated[
    str | None,
    typer.Argument(
        metavar="SOURCE",
        help="The checkpoint to gate (a file, folder, DCP save or Hub repo).",
        show_default=False,
    ),
]
BaselineOpt = Annotated[
    str | None,
    typer.Option(
        "--baseline", metavar="CKPT", help="Compare against this checkpoint (drift, band changes)."
    ),
]
ExpectInitOpt = Annotated[
    bool | None,
    typer.Option(
        "--expect-init/--no-expect-init",
        help="Step 0: every gain exactly the identity, every bias zero.",
    ),
]
ExpectMtpOpt = Annotated[
    int | None,
    typer.Option("--expect-mtp", metavar="N", min=0, help="The checkpoint must hold N MTP depths."),
]
SeverityOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--severity",
        metavar="CHECK=LEVEL",
        help="CHECK=error|warn|off, e.g. band=warn (repeatable).",
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="A TOML configuration file (default: [tool.normscope] in the nearest "
        "pyproject.toml): bands, roles, scope, rules, anomaly and check policy.",
    ),
]
ShowConfigOpt = Annotated[
    bool,
    typer.Option(
        "--show-config", help="Print the merged configuration (defaults < config < flags) and exit."
    ),
]
AllowUnknownOpt = Annotated[
    bool | None,
    typer.Option(
        "--allow-unknown/--no-allow-unknown",
        help="Judge what could be read even when normscope did not understand the architecture "
        "(no final norm found, or more than max_unknown of the norms matched no rule); without "
        "it such a checkpoint is refused with exit 2.",
    ),
]
CheckFormatOpt = Annotated[
    CheckFormat | None,
    typer.Option(
        "--format",
        "-f",
        help="Output format [text, or what -o's extension names: .json, .xml (junit), .html; a "
        "--format that contradicts it is refused].",
        show_default=False,
    ),
]

# --- series -------------------------------------------------------------------------------------
SeriesSources = Annotated[
    list[str],
    typer.Argument(
        help="A run folder (or object-store prefix, s3://bucket/run) of checkpoints "
        "(checkpoint-<step>, iter_<N>, step-<N>, step<N>, global_step<N>, <N>), or checkpoints "
        "listed in order.",
        metavar="PATH",
        show_default=False,
    ),
]
SeriesAllOpt = Annotated[
    bool, typer.Option("--all", help="Also list every norm's last ratio and drift.")
]
OrderOpt = Annotated[
    Order | None,
    typer.Option(
        "--order",
        help="By the step in the name, by name, by modification time, or as given [a run "
        "folder: step; checkpoints listed: as given].",
        show_default=False,
    ),
]
JobsOpt = Annotated[
    int | None,
    typer.Option(
        "--jobs", "-j", metavar="N", min=1, help="Checkpoints measured at once [min(4, CPUs)]."
    ),
]
ExecutorOpt = Annotated[
    SeriesExecutor,
    typer.Option(
        "--executor",
        help="local: this machine (one loop or a process pool); dask: each checkpoint a unit of "
        "work on a Dask cluster (--cluster, else $DASK_SCHEDULER_ADDRESS, else a local one of "
        "--jobs workers). Needs normscope[dask].",
    ),
]
FoldExecutorOpt = Annotated[
    SeriesExecutor,
    typer.Option(
        "--executor",
        help="local: this machine; dask: the matrices in sets, each set a unit of work on a Dask "
        "cluster (--cluster, else $DASK_SCHEDULER_ADDRESS, else a local one of min(4, CPUs) "
        "workers); every matrix is reduced whole, so the result is the local one to the bit. "
        "Needs normscope[dask].",
    ),
]
ClusterOpt = Annotated[
    str | None,
    typer.Option(
        "--cluster",
        metavar="ADDRESS",
        help="The Dask scheduler to run on (tcp://host:8786); implies --executor dask.",
        show_default=False,
    ),
]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Exit 2 when any checkpoint is skipped.")]
PlotOpt = Annotated[
    str | None,
    typer.Option("--plot", metavar="FILE", help="Also draw the trends to FILE.png, .svg or .html."),
]
PlotRoleOpt = Annotated[
    str | None,
    typer.Option(
        "--plot-role",
        metavar="ROLE",
        help="Role of the plot's layer × step heatmap [mlp_input, else attn_input].",
    ),
]
SeriesFailOpt = Annotated[
    FailOn,
    typer.Option("--fail-on", help="Exit 1 when a norm in --scope is out of band at the end."),
]
SeriesDriftOpt = Annotated[
    float | None,
    typer.Option(
        "--max-drift", metavar="X", help="Largest allowed ‖g−g_prev‖/‖g_prev‖ over the last two."
    ),
]
RevisionsOpt = Annotated[
    str | None,
    typer.Option(
        "--revisions",
        metavar="REVS",
        help="With one Hub repo (org/name): its branches/tags to follow, a comma list or a "
        "glob ('stage1-step*'), ordered by the step in their names.",
    ),
]

EventsOpt = Annotated[
    str | None,
    typer.Option(
        "--events",
        metavar="TB_LOGDIR",
        help="The run's TensorBoard logs: show the main and MTP losses, their gap and the final "
        "norm's ratio side by side (the playbook's stability trinity). Needs "
        "normscope[tensorboard].",
    ),
]
MainTagOpt = Annotated[
    str | None,
    typer.Option(
        "--main-tag",
        metavar="TAGS",
        help="Tag(s) of the main loss, first found wins [lm loss, lm_loss, train/loss, loss...].",
    ),
]
MtpTagOpt = Annotated[
    str | None,
    typer.Option(
        "--mtp-tag",
        metavar="TAGS",
        help="Tag(s) of the MTP loss, first found wins [mtp_1 loss, mtp_1_loss, mtp_loss...].",
    ),
]
TensorboardOpt = Annotated[
    str | None,
    typer.Option(
        "--tensorboard",
        metavar="OUTDIR",
        help="Also write every norm's ratio by step and the band edges as TensorBoard scalars.",
    ),
]

# --- cache --------------------------------------------------------------------------------------
ClearOpt = Annotated[
    bool, typer.Option("--clear", help="Delete what normscope cached (not the HF cache).")
]

# --- fold ---------------------------------------------------------------------------------------
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device", metavar="DEVICE", help="auto (CUDA when torch sees one), cpu, cuda or cuda:N."
    ),
]
MaxMemoryOpt = Annotated[
    str,
    typer.Option(
        "--max-memory",
        metavar="SIZE",
        help="Budget for matrix blocks in flight (e.g. 256MB, 2GB); larger matrices are read "
        "in row blocks.",
    ),
]
ExpertsOpt = Annotated[
    str,
    typer.Option(
        "--experts",
        metavar="N|shared|all",
        help="MoE: 'shared' (router + shared experts), 'all', or N routed experts per layer "
        "spread over the range (reported as a sample).",
    ),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print only how many bytes a fold would read; read none.")
]
FoldAllOpt = Annotated[bool, typer.Option("--all", help="List every folded norm.")]
FoldFailOpt = Annotated[
    FailOn,
    typer.Option("--fail-on", help="Exit 1 when a folded norm in --scope is out of band."),
]

# --- help text ----------------------------------------------------------------------------------
_BRACED = re.compile(r"\{([A-Z][A-Z_]*)\}")
_ARG_TYPE = re.compile(r"^(\s+\[?[A-Z][A-Z_]*\]?(?:\.\.\.)?) <[a-z_\[\]]+>", re.MULTILINE)


def clean_help(text: str) -> str:
    """Typer's plain help writes `{SOURCE}` and `SOURCE <str>`: say `SOURCE`, as man pages do."""
    return _ARG_TYPE.sub(r"\1", _BRACED.sub(r"\1", text))


class Command(TyperCommand):
    """Every command's class: its help and usage lines without typer's type annotations."""

    def get_help(self, ctx: Any) -> str:
        return clean_help(super().get_help(ctx))

    def get_usage(self, ctx: Any) -> str:
        return clean_help(super().get_usage(ctx))

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        super().format_usage(ctx, formatter)
        formatter.buffer[:] = [clean_help(piece) for piece in formatter.buffer]

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """A variadic argument reads `PATH...` whatever typer's version: 0.29 adds the dots to
        an explicit metavar, 0.27-0.28 (the versions pyproject allows) do not."""
        pieces: list[str] = super().collect_usage_pieces(ctx)
        variadic = {p.metavar for p in self.params if p.nargs == -1 and p.metavar}
        return [f"{p}..." if p.strip("{}[]") in variadic else p for p in pieces]
