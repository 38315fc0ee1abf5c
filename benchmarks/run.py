"""normscope benchmarks: one command builds the replicas (if missing), runs every competitor
whole-process in alternating rounds, and writes benchmarks/RESULTS.md.

    python benchmarks/run.py            # full run (~5-7 min on 2 cores)
    python benchmarks/run.py --quick    # a fast subset (~1 min): fewer runs, smaller series

Every figure is a whole process started with subprocess and reaped with os.wait4: wall time
(perf_counter around start..reap), peak RSS (ru_maxrss), CPU (ru_utime + ru_stime, children
included), page faults (ru_minflt + ru_majflt). See benchmarks/README.md for what each means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import replicas  # noqa: E402

PY = sys.executable
BIN = Path(PY).parent
NORMSCOPE = str(BIN / "normscope") if (BIN / "normscope").exists() else shutil.which("normscope")
COMP = HERE / "competitors"
PAGE = os.sysconf("SC_PAGE_SIZE")
RETRIES = 3


# ---------------------------------------------------------------------------------------------
# One whole-process run


@dataclass
class Run:
    wall: float
    cpu: float
    maxrss: int
    faults: int
    rc: int
    stdout: str
    stderr: str


# NOTE: ru_maxrss survives execve on Linux: a child forked (or vforked, as subprocess does) from
# this harness, which has imported numpy and torch, would report the harness's own peak RSS. So
# every measured command is forked by a small separate spawner process (python -S, ~10 MB) that
# reaps it with wait4 and reports wall time and rusage.
_SPAWNER_CODE = r"""
import ctypes, json, os, sys, time
# PR_SET_CHILD_SUBREAPER: descendants orphaned by the measured command (a multiprocessing
# forkserver and its workers) are re-parented here, so their CPU time can be collected too.
try:
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
except Exception:
    pass
for line in sys.stdin:
    req = json.loads(line)
    out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.execvpe(req["argv"][0], req["argv"], req["env"])
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    cpu, maxrss, orphans = ru.ru_utime + ru.ru_stime, ru.ru_maxrss, 0
    deadline = time.monotonic() + 10
    while True:
        try:
            p2, _, ru2 = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if p2 == 0:
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
            continue
        orphans += 1
        cpu += ru2.ru_utime + ru2.ru_stime
        maxrss = max(maxrss, ru2.ru_maxrss)
    os.close(out)
    os.close(err)
    print(json.dumps({"wall": wall, "rc": os.waitstatus_to_exitcode(status), "cpu": cpu,
                      "maxrss": maxrss * 1024, "faults": ru.ru_minflt + ru.ru_majflt,
                      "orphans": orphans}), flush=True)
"""


class _Spawner:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def run(self, argv: Sequence[str], env: dict[str, str]) -> tuple[dict, str, str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [PY, "-S", "-u", "-c", _SPAWNER_CODE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with tempfile.TemporaryDirectory() as tmp:
            out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
            req = {"argv": list(argv), "env": env, "stdout": out, "stderr": err}
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            reply = json.loads(self.proc.stdout.readline())
            return (
                reply,
                Path(out).read_text(errors="replace"),
                Path(err).read_text(errors="replace"),
            )


_SPAWNER = _Spawner()


def run_once(argv: Sequence[str], env: dict[str, str] | None = None) -> Run:
    """Run argv whole-process (forked by the spawner); return its wall time and rusage."""
    reply, stdout, stderr = _SPAWNER.run(argv, dict(os.environ if env is None else env))
    return Run(
        reply["wall"], reply["cpu"], reply["maxrss"], reply["faults"], reply["rc"], stdout, stderr
    )


@dataclass
class Case:
    key: str
    label: str
    argv: list[str]
    parse: Callable[[Run], dict] | None = None
    """Extracts per-run figures (e.g. bytes_read) from a run's output."""
    runs: list[Run] = field(default_factory=list)
    extra: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        walls = [r.wall for r in self.runs]
        out = {
            "label": self.label,
            "argv": " ".join(_short(a) for a in self.argv),
            "n": len(walls),
            "wall_median": statistics.median(walls),
            "wall_min": min(walls),
            "wall_all": walls,
            "cpu_median": statistics.median(r.cpu for r in self.runs),
            "cpu_util": statistics.median(r.cpu / r.wall for r in self.runs),
            "maxrss_median": int(statistics.median(r.maxrss for r in self.runs)),
            "faults_median": int(statistics.median(r.faults for r in self.runs)),
            "rc": sorted({r.rc for r in self.runs}),
        }
        if self.extra:
            out.update(self.extra[-1])
        return out


def _short(arg: str) -> str:
    for root, name in ((str(HERE) + "/", "benchmarks/"), (str(BIN) + "/", "")):
        if arg.startswith(root):
            return name + arg[len(root) :]
    return arg


def alternate(cases: Sequence[Case], rounds: int, log: Callable[[str], None]) -> None:
    """Run every case `rounds` times, interleaved, rotating the order each round."""
    for r in range(rounds):
        k = r % len(cases)
        for case in list(cases[k:]) + list(cases[:k]):
            run = run_once(case.argv)
            for attempt in range(RETRIES):
                if run.rc == 0:
                    break
                # The working tree may be mid-edit by someone else: wait, try again.
                log(
                    f"  {case.label} exited {run.rc}; retry {attempt + 1}/{RETRIES} in 20 s: "
                    f"{run.stderr.strip().splitlines()[-1:] or ''}"
                )
                time.sleep(20)
                run = run_once(case.argv)
            if run.rc != 0:
                raise SystemExit(
                    f"{case.label} exited {run.rc}:\n{run.stderr[-2000:]}\n{' '.join(case.argv)}"
                )
            case.runs.append(run)
            if case.parse is not None:
                case.extra.append(case.parse(run))
            log(
                f"  [{r + 1}/{rounds}] {case.label:<40} {run.wall:7.3f} s  "
                f"{run.maxrss / 2**20:7.1f} MiB"
            )


# ---------------------------------------------------------------------------------------------
# Parsers


def parse_normscope(run: Run) -> dict:
    rep = json.loads(run.stdout)
    io = rep["io"]
    return {
        "bytes_read": io["bytes_read"],
        "metadata_bytes": io["metadata_bytes"],
        "norms": len(rep["norms"]),
        "inproc_seconds": io["seconds"],
        "warnings": len(rep["warnings"]),
    }


def parse_floor(run: Run) -> dict:
    info = json.loads(run.stderr.strip().splitlines()[-1])
    return {"bytes_read": info["bytes_read"], "norms": info["norms"]}


def parse_lines(run: Run) -> dict:
    return {"norms": sum(1 for line in run.stdout.splitlines() if line.strip())}


# ---------------------------------------------------------------------------------------------
# Benchmarks


def scan_cases(replica: Path, tag: str) -> list[Case]:
    return [
        Case(
            f"{tag}/safe_open",
            "safe_open script (torch)",
            [PY, str(COMP / "safe_open_script.py"), str(replica)],
            parse_lines,
        ),
        Case(
            f"{tag}/floor",
            "floor (headers + pread norms, numpy)",
            [PY, str(COMP / "floor.py"), str(replica)],
            parse_floor,
        ),
        Case(
            f"{tag}/normscope",
            "normscope scan --format json",
            [NORMSCOPE, "scan", str(replica), "--format", "json"],
            parse_normscope,
        ),
    ]


def ioprobe(replica: Path) -> dict:
    """Kernel read accounting (/proc/self/io rchar) of one `normscope scan`, see ioprobe.py."""
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        env = os.environ | {"IOPROBE_OUT": tmp.name}
        run = run_once(
            [PY, str(COMP / "ioprobe.py"), "scan", str(replica), "--format", "json"], env=env
        )
        if run.rc != 0:
            return {"error": run.stderr[-500:]}
        return json.loads(Path(tmp.name).read_text())


def load_file_case(replica: Path, manifest: dict, rounds: int, log: Callable) -> dict:
    """safetensors.torch.load_file of one median-sized shard, extrapolated by bytes."""
    shards = sorted(manifest["shards"], key=lambda s: s["size"])
    shard = shards[len(shards) // 2]
    path = replica / shard["file"]
    case = Case(
        "load_file", "load_file one shard", [PY, str(COMP / "load_file_one_shard.py"), str(path)]
    )
    # A 688 GB checkpoint never sits in the page cache: evict the shard before each run (and
    # after, so the ~4 GB of zero pages do not crowd the shared machine).
    for _ in range(rounds):
        _evict(path)
        alternate([case], 1, log)
    _evict(path)
    s = case.summary()
    scale = manifest["logical_bytes"] / shard["size"]
    s.update(
        shard=shard["file"],
        shard_bytes=shard["size"],
        scale=scale,
        wall_extrapolated=s["wall_median"] * scale,
        bytes_read_extrapolated=manifest["logical_bytes"],
    )
    return s


def machine_cpu_seconds() -> float:
    """CPU-seconds the whole machine has spent busy (all processes, /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def baseline_cases() -> list[Case]:
    return [
        Case("python", "python -c pass (interpreter start)", [PY, "-c", "pass"]),
        Case(
            "import_torch",
            "python -c 'import torch, safetensors'",
            [PY, "-c", "import torch, safetensors.torch"],
        ),
        Case("help", "normscope --help", [NORMSCOPE, "--help"]),
    ]


def has_series_command() -> bool:
    run = run_once([NORMSCOPE, "--help"])
    return any(line.strip().startswith("series") for line in run.stdout.splitlines())


def series_dirs(series: Path, sizes: Sequence[int]) -> dict[int, Path]:
    """Folders holding the first n checkpoints (hard links: sparse files, no copy)."""
    out = {}
    all_ckpts = replicas.series_subset(series, max(sizes))
    for n in sizes:
        if n == len(all_ckpts) and n == len(list(series.glob("checkpoint-*"))):
            out[n] = series
            continue
        d = series.parent / f"{series.name}@{n}"
        want = {p.name for p in all_ckpts[:n]}
        have = {p.name for p in d.glob("checkpoint-*")} if d.is_dir() else set()
        if have != want:
            shutil.rmtree(d, ignore_errors=True)
            for ckpt in all_ckpts[:n]:
                (d / ckpt.name).mkdir(parents=True)
                for f in ckpt.iterdir():
                    os.link(f, d / ckpt.name / f.name)
        out[n] = d
    return out


def series_cases(dirs: dict[int, Path], native: bool) -> list[Case]:
    cases = []
    loop = (
        'for d in "{d}"/checkpoint-*; do "{ns}" scan "$d" --format json -q >/dev/null '
        "|| exit 1; done"
    )
    for n, d in dirs.items():
        if native:
            cases.append(
                Case(
                    f"series/{n}",
                    f"normscope series ({n} ckpts)",
                    [NORMSCOPE, "series", str(d), "--format", "json", "-q"],
                )
            )
        else:
            cases.append(
                Case(
                    f"series/{n}",
                    f"shell loop of normscope scan ({n} ckpts)",
                    ["bash", "-c", loop.format(d=d, ns=NORMSCOPE)],
                )
            )
    n, d = min(dirs.items())
    if native:
        big_n, big_d = max(dirs.items())
        cases.append(
            Case(
                f"series/{big_n}/j1",
                f"normscope series -j 1 ({big_n} ckpts)",
                [NORMSCOPE, "series", str(big_d), "--format", "json", "-q", "-j", "1"],
            )
        )
        # For reference: one process per checkpoint, what users do without `series`.
        cases.append(
            Case(
                f"series/{n}/loop",
                f"shell loop of normscope scan ({n} ckpts)",
                ["bash", "-c", loop.format(d=d, ns=NORMSCOPE)],
            )
        )
    else:
        # For reference: the same loop on both cores (what a parallel series could reach).
        par = (
            f'ls -d "{d}"/checkpoint-* | xargs -P 2 -I{{}} "{NORMSCOPE}" scan {{}} '
            "--format json -q >/dev/null"
        )
        cases.append(
            Case(
                f"series/{n}/xargs2", f"xargs -P 2 normscope scan ({n} ckpts)", ["bash", "-c", par]
            )
        )
    return cases


def heavy_series_cases(directory: Path, count: int, native: bool) -> list[Case]:
    """A series of DeepSeek-V3-sized checkpoints (hard links of the replica): enough work per
    checkpoint for a pool to pay, so both cores can be used."""
    if not native:
        return []
    base = [NORMSCOPE, "series", str(directory), "--format", "json", "-q"]
    return [
        Case(f"heavy/{count}", f"normscope series, {count} × DeepSeek-V3 (default jobs)", base),
        Case(
            f"heavy/{count}/j1", f"normscope series -j 1, {count} × DeepSeek-V3", [*base, "-j", "1"]
        ),
    ]


def fit_line(points: Sequence[tuple[int, float]]) -> dict:
    """Least-squares wall = a + b*n, with R²."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {"intercept": a, "per_checkpoint": b, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0}


def hub_section(quick: bool, log: Callable) -> dict:
    """DeepSeek-V3 served by the loopback fake Hub (tests/hubserver.py), 0 and 50 ms latency."""
    server = HERE.parent / "tests" / "hubserver.py"
    if not server.exists():
        return {"status": "pending", "reason": "tests/hubserver.py does not exist yet"}
    import hub_bench

    try:
        res = hub_bench.run(
            "deepseek-v3", replicas.REPLICAS / "deepseek-v3", [0.0, 0.05], 1 if quick else 2, log
        )
    except Exception as exc:
        return {"status": "pending", "reason": f"the fake Hub could not serve the replica: {exc!r}"}
    lat = res["latencies"]
    if any("error" in v for v in lat.values()) or len(lat) < 2:
        err = next((v["error"] for v in lat.values() if "error" in v), "no result")
        return {
            "status": "pending",
            "reason": f"`normscope scan` of the served repo failed: {err.strip()[-300:]}",
        }
    try:
        from normscope.sources.hub import MAX_IN_FLIGHT as conc
    except ImportError:
        conc = 8
    z, h = lat["0.0"], lat["0.05"]
    shards = h["shards"]
    per_shard_all = h["requests_shards"] / shards
    per_shard_ranges = h["requests_cdn"] / shards
    predicted = 0.05 * h["requests"] / conc
    added = h["wall_median"] - z["wall_median"]
    rows = [
        "| latency per request | wall median | wall min | requests (API / shard /resolve / CDN "
        "ranged GETs) | per shard (all / ranged GETs) | bytes transferred | bytes / (header + "
        "norm) |",
        "|---:|---:|---:|---|---:|---:|---:|",
    ]
    for key, v in lat.items():
        rows.append(
            f"| {float(key) * 1e3:.0f} ms | {_s(v['wall_median'])} | {_s(v['wall_min'])} | "
            f"{v['requests']} ({v['requests_api']} / {v['requests_resolve_shards']} / "
            f"{v['requests_cdn']}) | {v['requests_shards'] / shards:.2f} / "
            f"{v['requests_cdn'] / shards:.2f} | {v['bytes_sent']:,} | "
            f"{v['bytes_sent'] / v['need_bytes']:.3f} |"
        )
    text = "\n".join(
        [
            f"`normscope scan {res['repo_id']}` against `tests/hubserver.py` serving the "
            "DeepSeek-V3 "
            "replica (shards as sparse-file-backed blobs, see benchmarks/hub_bench.py), cold "
            "caches (fresh HF_HOME and NORMSCOPE_CACHE per run), "
            f"{'library call' if res['mode']['how'] != 'cli' else 'CLI'}; the fake Hub runs in the "
            "harness process on the same 2 cores.",
            "",
            *rows,
            "",
            f"Model: latency × requests / concurrency = 0.05 s × {h['requests']} / {conc} = "
            f"{_s(predicted)}. Measured: the 50 ms run took {_s(added)} more than the 0 ms run "
            f"({added / predicted:.2f} × the model); the 0 ms run ({_s(z['wall_median'])}) is CPU "
            f"(client + in-process fake server), not bytes: {h['bytes_sent'] / 1e6:.1f} MB "
            f"transferred in all, {h['bytes_sent'] / h['need_bytes']:.3f} × (header + norm bytes) "
            f"(the index.json alone is {h['index_bytes'] / 1e6:.1f} MB).",
        ]
    )
    verdict = (
        f"{'**met**' if per_shard_all < 3 else '**missed**'} counting every HTTP request to a "
        f"shard ({per_shard_all:.2f} per shard: one /resolve redirect + "
        f"{per_shard_ranges:.2f} ranged GETs); "
        f"{'**met**' if per_shard_ranges < 3 else '**missed**'} counting only the ranged GETs. "
        f"Time: 50 ms latency added {_s(added)} vs latency × requests / {conc} = "
        f"{_s(predicted)}, and {h['bytes_sent'] / 1e6:.1f} MB moved: latency-bound, not "
        "byte-bound" + (" (**met**)." if added >= 0.5 * predicted else " (**missed**).")
    )
    return {
        "status": "measured",
        "results": res,
        "text": text,
        "verdict": verdict,
        "per_shard_all": per_shard_all,
        "per_shard_ranges": per_shard_ranges,
        "predicted": predicted,
        "added": added,
    }


# ---------------------------------------------------------------------------------------------
# Machine facts


def _cmd(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return "?"


def machine() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy

    versions = {"numpy": numpy.__version__}
    for mod in ("safetensors", "torch", "typer"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: PERF203
            versions[mod] = "?"
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": _cmd(["nproc"]),
        "free_g": _cmd(["free", "-g"]),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "busy_at_start": machine_cpu_seconds(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "versions": versions,
        "normscope": _cmd([NORMSCOPE, "--version"]),
        "git": _cmd(["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"]),
        "fs": _cmd(["df", "-h", "--output=source,fstype,size,avail", str(HERE)]),
    }


# ---------------------------------------------------------------------------------------------
# Report


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB"


def _s(x: float) -> str:
    return f"{x:.3f} s"


def render(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# normscope benchmark results",
        "",
        f"Last run: {m['date']} (`python benchmarks/run.py{' --quick' if res['quick'] else ''}`,"
        f" {res['rounds']} alternating rounds, medians; load average at start "
        f"{' '.join(m['loadavg'])}).",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}; `nproc`: {m['nproc']}; kernel {m['kernel']}",
        f"- Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f"; {m['normscope']} (git {m['git']})",
        "- `free -g`:",
        "",
        "```",
        m["free_g"],
        "```",
        "",
        "Other jobs shared this machine during the run: compare ratios within this run, not "
        "absolute times across runs. All timings are warm page cache (the replicas' few MB of "
        "real data stay cached; holes never touch the disk).",
        "",
        "## Replicas",
        "",
        "| replica | shards | tensors | norms | logical size | on disk | header bytes | norm bytes "
        "| header + norm | index.json |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in res["replicas"].items():
        lines.append(
            f"| {name} | {r['shards_count']} | {r['tensors']:,} | {r['norms']} | "
            f"{r['logical_bytes'] / 1e9:,.1f} GB | {_mb(r['disk_bytes'])} | "
            f"{r['header_bytes']:,} | {r['norm_bytes']:,} | "
            f"{r['header_bytes'] + r['norm_bytes']:,} | {r['index_bytes']:,} |"
        )
    lines += [
        "",
        "Header and norm bytes are computed by `benchmarks/replicas.py` from the layout it wrote, "
        "independently of normscope.",
        "",
    ]
    for name, group in res["scans"].items():
        r = res["replicas"][name]
        need = r["header_bytes"] + r["norm_bytes"]
        lines += [
            f"## Scan: {name} ({r['shards_count']} shards, {r['logical_bytes'] / 1e9:,.1f} GB)",
            "",
            "| competitor | wall median | wall min | CPU (user+sys) | peak RSS | bytes read | "
            "bytes read / (header + norm) | norms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, c in group.items():
            if key == "safe_open":
                est = c["faults_median"] * PAGE
                net = max(0, c["faults_median"] - res["baselines"]["import_torch"]["faults_median"])
                br = (
                    f"≈{_mb(est)} touched (estimate: page faults × {PAGE} B; "
                    f"≈{_mb(net * PAGE)} beyond `import torch`)"
                )
                ratio = "n/a (estimate)"
            elif "bytes_read" in c:
                br = f"{c['bytes_read']:,}"
                ratio = f"{c['bytes_read'] / need:.4f}"
                if "metadata_bytes" in c:
                    br += f" (+ {c['metadata_bytes']:,} config/index)"
                    ratio += f" ({(c['bytes_read'] + c['metadata_bytes']) / need:.3f} with them)"
            else:
                br, ratio = "?", "?"
            lines.append(
                f"| {c['label']} | {_s(c['wall_median'])} | {_s(c['wall_min'])} | "
                f"{_s(c['cpu_median'])} | {c['maxrss_median'] / 2**20:,.0f} MiB | {br} | {ratio} | "
                f"{c.get('norms', '?')} |"
            )
        if name in res.get("load_file", {}):
            lf = res["load_file"][name]
            lines.append(
                f"| full load: `load_file` of one shard ({lf['shard']}, {_mb(lf['shard_bytes'])}), "
                f"**extrapolated** ×{lf['scale']:.1f} to the checkpoint | "
                f"{_s(lf['wall_extrapolated'])} (1 shard: {_s(lf['wall_median'])}) | "
                f"{_s(lf['wall_min'] * lf['scale'])} | {_s(lf['cpu_median'] * lf['scale'])} | "
                f"{lf['maxrss_median'] / 2**20:,.0f} MiB (one shard) | "
                f"{lf['bytes_read_extrapolated']:,} | "
                f"{lf['bytes_read_extrapolated'] / need:,.0f} | all |"
            )
        ns, fl, so = group["normscope"], group["floor"], group["safe_open"]
        lines += [
            "",
            f"Ratios: normscope / floor wall = **{ns['wall_median'] / fl['wall_median']:.2f}×**; "
            "safe_open script / normscope wall = "
            f"**{so['wall_median'] / ns['wall_median']:.2f}×**; "
            f"normscope bytes_read / (header + norm) = **{ns['bytes_read'] / need:.4f}**. "
            f"normscope's own in-process time (io.seconds): {_s(ns['inproc_seconds'])}.",
        ]
        if name in res.get("ioprobe", {}):
            io = res["ioprobe"][name]
            if "rchar" in io:
                meta = ns["metadata_bytes"]
                base = res.get("ioprobe_baseline", {})
                if "rchar" in base:
                    other = (
                        base["rchar"]
                        - base["counted"]["bytes_read"]
                        - base["counted"]["metadata_bytes"]
                    )
                    lines.append(
                        f"Kernel cross-check (/proc/self/io rchar of one normscope run, after "
                        f"imports): {io['rchar']:,} bytes in {io['syscr']:,} read calls; minus "
                        f"{other:,} bytes the command reads whatever the checkpoint (measured on "
                        f"a one-shard 1B checkpoint: lazily imported modules) = "
                        f"{io['rchar'] - other:,}; normscope counted {ns['bytes_read']:,} shard "
                        f"bytes + {meta:,} config/index bytes = {ns['bytes_read'] + meta:,}."
                    )
                else:
                    lines.append(
                        f"Kernel cross-check (/proc/self/io of one normscope run, after "
                        f"imports): rchar = {io['rchar']:,} bytes in {io['syscr']:,} read calls; "
                        f"normscope counted {ns['bytes_read']:,} shard bytes + {meta:,} "
                        f"config/index bytes = {ns['bytes_read'] + meta:,}."
                    )
        lines.append("")
    b = res["baselines"]
    lines += [
        "## Start-up",
        "",
        "| command | wall median | wall min | peak RSS |",
        "|---|---:|---:|---:|",
    ]
    for c in b.values():
        lines.append(
            f"| {c['label']} | {_s(c['wall_median'])} | {_s(c['wall_min'])} | "
            f"{c['maxrss_median'] / 2**20:,.0f} MiB |"
        )
    s = res["series"]
    lines += [
        "",
        f"## Series ({s['mode']})",
        "",
        f"{s['note']}",
        "",
        "| checkpoints | command | wall median | wall min | per checkpoint | CPU (user+sys) | "
        "CPU utilisation (of 2 cores = 200%) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for key, c in s["cases"].items():
        n = int(key.split("/")[1])
        lines.append(
            f"| {n} | {c['label']} | {_s(c['wall_median'])} | {_s(c['wall_min'])} | "
            f"{c['wall_median'] / n * 1e3:.0f} ms | {_s(c['cpu_median'])} | "
            f"{100 * c['cpu_util']:.0f}% |"
        )
    fit = s["fit"]
    lines += [
        "",
        f"Other processes on the machine kept {s['other_load']:.2f} of the 2 cores busy on "
        "average while the series ran (from /proc/stat, minus the measured commands' own CPU): "
        "CPU utilisation and parallel speed-up can only use what they left.",
    ]
    lines += [
        "",
        f"Linear fit wall = a + b·n over the sequential runs: a = {_s(fit['intercept'])}, "
        f"b = {fit['per_checkpoint'] * 1e3:.1f} ms per checkpoint, R² = {fit['r2']:.4f}; "
        f"t({s['sizes'][-1]}) / t({s['sizes'][0]}) = {s['growth']:.2f} "
        f"(linear: {s['sizes'][-1] / s['sizes'][0]:.2f}).",
        "",
        "## Hub",
        "",
    ]
    hub = res["hub"]
    if hub["status"] == "pending":
        lines.append(f"TODO (pending): not measured — {hub['reason']}. No numbers are reported.")
    else:
        lines.append(hub.get("text", ""))
    lines += ["", "## Targets (issue 6)", ""]
    lines += [f"- {t}" for t in res["targets"]]
    lines.append("")
    return "\n".join(lines)


def targets(res: dict) -> list[str]:
    ds = res["scans"]["deepseek-v3"]
    r = res["replicas"]["deepseek-v3"]
    need = r["header_bytes"] + r["norm_bytes"]
    ns, fl, so = ds["normscope"], ds["floor"], ds["safe_open"]
    out = []

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    q = ns["bytes_read"] / need
    out.append(
        f"DeepSeek-V3 bytes read ≤ 1.02 × (header + norm bytes): {verdict(q <= 1.02)} — "
        f"{ns['bytes_read']:,} / {need:,} = {q:.4f} (shard bytes, normscope's counter; it also "
        f"reads config.json + the {r['index_bytes']:,}-byte index: "
        f"{(ns['bytes_read'] + ns['metadata_bytes']) / need:.3f} with them)."
    )
    q = ns["wall_median"] / fl["wall_median"]
    out.append(
        f"normscope ≤ 2× the floor's wall time: {verdict(q <= 2)} — {_s(ns['wall_median'])} vs "
        f"{_s(fl['wall_median'])} = {q:.2f}×."
    )
    q = so["wall_median"] / ns["wall_median"]
    out.append(
        f"normscope ≥ 3× faster than the safe_open script: {verdict(q >= 3)} — "
        f"{_s(so['wall_median'])} vs {_s(ns['wall_median'])} = {q:.2f}×."
    )
    rss = ns["maxrss_median"] / 2**20
    out.append(
        f"Peak RSS < 300 MB: {verdict(ns['maxrss_median'] < 300e6)} — {rss:.0f} MiB "
        f"({ns['maxrss_median'] / 1e6:.0f} MB)."
    )
    h = res["baselines"]["help"]
    out.append(
        f"`normscope --help` < 0.5 s: {verdict(h['wall_median'] < 0.5)} — "
        f"{_s(h['wall_median'])} median, {_s(h['wall_min'])} min."
    )
    s = res["series"]
    linear = s["fit"]["r2"] >= 0.98
    seq = s["cases"][f"series/{s['sizes'][-1]}"]
    heavy = next(
        (c for k, c in s["cases"].items() if k.startswith("heavy/") and not k.endswith("/j1")), None
    )
    heavy1 = next(
        (c for k, c in s["cases"].items() if k.startswith("heavy/") and k.endswith("/j1")), None
    )
    both_small = seq["cpu_util"] >= 1.5
    speedup = heavy1["wall_median"] / heavy["wall_median"] if heavy and heavy1 else 0.0
    both_heavy = bool(heavy) and heavy["cpu_util"] >= 1.4 and speedup >= 1.25
    out.append(
        f"Series wall time linear in checkpoints: {verdict(linear)} — R² = {s['fit']['r2']:.4f}, "
        f"{s['fit']['per_checkpoint'] * 1e3:.0f} ms per checkpoint ({s['mode']})."
    )
    ref = s["cases"].get(f"series/{s['sizes'][0]}/loop")
    j1 = s["cases"].get(f"series/{s['sizes'][-1]}/j1")
    if both_small or not heavy:
        word = verdict(both_small)
    elif both_heavy:
        word = "**met for large checkpoints, missed for small ones**"
    else:
        word = verdict(False)
    text = (
        f"Series uses both cores: {word} — CPU utilisation (user+sys)/wall of the whole "
        f"process tree: {100 * seq['cpu_util']:.0f}% of 200% for {s['sizes'][-1]} 1B checkpoints "
        f"({_s(seq['wall_median'])}"
        + (f"; -j 1: {_s(j1['wall_median'])}, {100 * j1['cpu_util']:.0f}%" if j1 else "")
        + ")"
    )
    if heavy and heavy1:
        text += (
            f"; {100 * heavy['cpu_util']:.0f}% for the series of DeepSeek-V3-sized checkpoints "
            f"({_s(heavy['wall_median'])} vs {_s(heavy1['wall_median'])} with -j 1: "
            f"{heavy1['wall_median'] / heavy['wall_median']:.2f}× speed-up)"
        )
    if ref:
        text += (
            f"; a shell loop of `normscope scan` costs "
            f"{ref['wall_median'] / s['sizes'][0] * 1e3:.0f} ms per checkpoint vs "
            f"{s['fit']['per_checkpoint'] * 1e3:.0f} ms in `series`"
        )
    out.append(text + ".")
    out.append(
        "Hub (< 3 requests per shard, time ≈ latency × requests / concurrency): "
        + (
            "**not measured** — " + res["hub"]["reason"] + "."
            if res["hub"]["status"] == "pending"
            else res["hub"]["verdict"]
        )
    )
    return out


ANALYSIS_MARK = "<!-- analysis: text below this line is kept when run.py rewrites the file -->"


def write_results(res: dict, path: Path) -> None:
    keep = ""
    if path.exists():
        old = path.read_text()
        if ANALYSIS_MARK in old:
            keep = old.split(ANALYSIS_MARK, 1)[1]
    path.write_text(render(res) + "\n" + ANALYSIS_MARK + keep.rstrip() + "\n")


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="fewer runs, smaller series, DeepSeek only"
    )
    ap.add_argument("--rounds", type=int, help="alternating rounds per scan (default 5; quick 2)")
    ap.add_argument(
        "--results",
        type=Path,
        help="where to write the report (default: RESULTS.md; out/RESULTS-quick.md with --quick)",
    )
    ap.add_argument("--json", type=Path, help="every run's figures (default: out/results.json)")
    args = ap.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    if args.results is None:
        args.results = replicas.OUT / "RESULTS-quick.md" if args.quick else HERE / "RESULTS.md"
    if args.json is None:
        args.json = replicas.OUT / ("results-quick.json" if args.quick else "results.json")
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    if NORMSCOPE is None:
        raise SystemExit("normscope is not installed in this environment")
    replicas.selfcheck()
    replicas.compile_normscope()
    names = ["deepseek-v3"] if args.quick else list(replicas.LAYOUTS)
    res: dict = {
        "quick": args.quick,
        "rounds": rounds,
        "machine": machine(),
        "replicas": {},
        "scans": {},
        "load_file": {},
        "ioprobe": {},
    }
    for name in names:
        log(f"replica {name}")
        d = replicas.build(name)
        res["replicas"][name] = json.loads((d / "replica.json").read_text())
    log("checking a replica shard with safetensors.safe_open")
    for line in replicas.check(replicas.REPLICAS / "deepseek-v3"):
        log("  " + line)
    series_n = 20 if args.quick else 100
    series = replicas.build_series(series_n)

    log("start-up baselines")
    base = baseline_cases()
    alternate(base, rounds, log)
    res["baselines"] = {c.key: c.summary() for c in base}

    for name in names:
        log(f"scan {name}")
        cases = scan_cases(replicas.REPLICAS / name, name)
        alternate(cases, rounds if name == "deepseek-v3" else max(2, rounds - 2), log)
        res["scans"][name] = {c.key.split("/")[1]: c.summary() for c in cases}
        res["ioprobe"][name] = ioprobe(replicas.REPLICAS / name)
    # The same probe on a one-shard 1B checkpoint: what the command reads besides the
    # checkpoint (lazily imported modules), to subtract from the replicas' rchar.
    small = replicas.series_subset(series, 1)[0]
    res["ioprobe_baseline"] = ioprobe(small) | {
        "counted": json.loads(run_once([NORMSCOPE, "scan", str(small), "--format", "json"]).stdout)[
            "io"
        ]
    }

    log("full load of one DeepSeek-V3 shard")
    res["load_file"]["deepseek-v3"] = load_file_case(
        replicas.REPLICAS / "deepseek-v3",
        res["replicas"]["deepseek-v3"],
        1 if args.quick else 3,
        log,
    )

    sizes = [5, 10, 20] if args.quick else [25, 50, 100]
    native = has_series_command()
    log(f"series {sizes} ({'normscope series' if native else 'shell loop: no series command'})")
    dirs = series_dirs(series, sizes)
    cases = series_cases(dirs, native)
    heavy_n = 3 if args.quick else 12
    heavy = heavy_series_cases(
        replicas.build_linked_series("deepseek-v3", heavy_n), heavy_n, native
    )
    busy0, t0 = machine_cpu_seconds(), time.perf_counter()
    alternate(cases + heavy, 1 if args.quick else 3, log)
    busy1, t1 = machine_cpu_seconds(), time.perf_counter()
    cases += heavy
    ours = sum(r.cpu for c in cases for r in c.runs)
    others = max(0.0, (busy1 - busy0) - ours)
    summ = {c.key: c.summary() for c in cases}
    seq = [(n, summ[f"series/{n}"]["wall_median"]) for n in sizes]
    res["series"] = {
        "mode": "normscope series"
        if native
        else "shell loop of `normscope scan` (no series command)",
        "note": (
            "`normscope series` (default jobs: its `auto` executor decides between one loop and "
            "a process pool) on the first 25/50/100 checkpoints of the 1B series, the same with "
            "`-j 1`, a shell loop of `normscope scan` for reference, and a series of "
            f"{heavy_n} DeepSeek-V3-sized checkpoints (hard links of the replica: identical "
            "checkpoints, only there to give each scan enough work for a pool to pay). CPU "
            "utilisation counts the whole process tree (the measuring spawner is a child "
            "subreaper, so a multiprocessing forkserver and its workers are reaped and counted)."
            if native
            else "`normscope series` is not in `normscope --help` at the time of this run, so "
            "the series "
            "is measured as a shell loop of `normscope scan --format json` (one process per "
            "checkpoint), plus the same loop under `xargs -P 2` for reference."
        ),
        "sizes": sizes,
        "cases": summ,
        "fit": fit_line(seq),
        "growth": seq[-1][1] / seq[0][1],
        "other_load": others / (t1 - t0),
        "per_checkpoint_logical": json.loads((series / "series.json").read_text())[
            "per_checkpoint"
        ],
    }
    log("hub: DeepSeek-V3 replica from tests/hubserver.py, 0 and 50 ms latency")
    res["hub"] = hub_section(args.quick, log)
    res["targets"] = targets(res)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1, default=str))
    write_results(res, args.results)
    log(f"wrote {args.results} and {args.json}")
    for t in res["targets"]:
        print("-", t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
