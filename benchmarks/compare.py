"""Before/after: time `normscope scan` from other source trees against the installed one.

    python benchmarks/compare.py --tree /tmp/patched [--tree DIR ...] [--replica deepseek-v3]
    python benchmarks/compare.py --tree /tmp/before --replica deepseek-v3-x16 --no-cache \
        --no-safe-open --rounds 5        # issue 29's scaling curve: 92k, 377k, 1.47M tensors

Each DIR holds a `normscope/` package (say, a copy of the working tree with a fix applied); it
runs as `PYTHONPATH=DIR python -m normscope scan REPLICA --format json`, whole-process, in
alternating rounds with the installed normscope, the floor and the safe_open script, so the
ratios come from one run. Checks that every tree produces the same report (io.seconds aside).
Each figure is the median over rounds; `/ floor` is taken round by round (each round runs every
command once, in rotated order) and its median printed, for wall and for CPU (user + sys).
`CPU/floor 1t` is against the floor run with one BLAS thread (numpy's OpenBLAS otherwise starts
a thread per core, ~0.1 s of CPU that normscope, which runs one, does not pay), and
`CPU/floor+index` against the floor plus an exact index check, also with one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import replicas  # noqa: E402
import run as harness  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", default=[], type=Path)
    ap.add_argument(
        "--replica", default="deepseek-v3", choices=list(replicas.LAYOUTS | replicas.SCALED)
    )
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-cache", action="store_true", help="scan with --no-cache (cold)")
    ap.add_argument("--no-safe-open", action="store_true", help="leave the torch script out")
    args = ap.parse_args()
    src = replicas.build(args.replica)
    py = harness.PY
    scan = [py, "-m", "normscope", "scan", str(src), "--format", "json"]
    if args.no_cache:
        scan.append("--no-cache")
    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        "normscope (installed)": (scan, dict(os.environ)),
    }
    for tree in args.tree:
        if not (tree / "normscope" / "__init__.py").is_file():
            raise SystemExit(f"{tree} holds no normscope/ package")
        variants[f"normscope ({tree})"] = (scan, dict(os.environ, PYTHONPATH=str(tree)))
    floor = [py, str(harness.COMP / "floor.py"), str(src)]
    variants["floor"] = (floor, dict(os.environ))
    # The floor as the issue measured it leaves numpy's OpenBLAS a thread per core, whose start
    # costs ~0.1 s CPU (normscope's CLI runs one): the same floor with one thread, for the
    # stricter ratio (issue 29's note, round 3e).
    variants["floor, one BLAS thread"] = (floor, dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    indexed = (src / "model.safetensors.index.json").is_file()
    if indexed:  # the floor of what normscope proves of the index (issue 29)
        floor_index = [py, str(harness.COMP / "floor_index.py"), str(src)]
        # one BLAS thread, as normscope runs (round 3d ran it with the default, a thread a core)
        variants["floor + exact index check"] = (
            floor_index,
            dict(os.environ, OPENBLAS_NUM_THREADS="1"),
        )
    if not args.no_safe_open:
        variants["safe_open script"] = (
            [py, str(harness.COMP / "safe_open_script.py"), str(src)],
            dict(os.environ),
        )
    # -m puts the current directory first on sys.path: run from an empty one, so PYTHONPATH
    # decides which normscope is imported.
    os.chdir(tempfile.mkdtemp())
    walls: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    rss: dict[str, list[int]] = {k: [] for k in variants}
    reports: dict[str, dict] = {}
    keys = list(variants)
    for r in range(args.rounds):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            argv, env = variants[key]
            run = harness.run_once(argv, env=env)
            if run.rc != 0:
                raise SystemExit(f"{key} exited {run.rc}:\n{run.stderr[-2000:]}")
            walls[key].append(run.wall)
            cpus[key].append(run.cpu)
            rss[key].append(run.maxrss)
            if key.startswith("normscope"):
                rep = json.loads(run.stdout)
                rep["io"].pop("seconds", None)
                reports[key] = rep
    base = reports["normscope (installed)"]
    so = statistics.median(walls["safe_open script"]) if "safe_open script" in walls else None
    load = os.getloadavg()
    print(f"{args.replica}, {args.rounds} alternating rounds, load average at the end {load}")
    print(
        f"{'command':<44} {'wall':>7} {'CPU':>7} {'RSS MiB':>8} {'wall/floor':>10} "
        f"{'CPU/floor':>9} {'CPU/floor 1t':>12} {'safe_open /':>12}"
        + (f" {'CPU/floor+index':>15}" if indexed else "")
    )
    for key, w in walls.items():
        same = (
            ""
            if key not in reports
            else (" same report" if reports[key] == base else " REPORT DIFFERS")
        )
        wall_ratio = statistics.median(a / b for a, b in zip(w, walls["floor"], strict=True))
        cpu_ratio = statistics.median(a / b for a, b in zip(cpus[key], cpus["floor"], strict=True))
        one = cpus["floor, one BLAS thread"]
        cpu_ratio_1t = statistics.median(a / b for a, b in zip(cpus[key], one, strict=True))
        speed = f"{so / statistics.median(w):12.2f}" if so is not None else ""
        if indexed:
            pairs = zip(cpus[key], cpus["floor + exact index check"], strict=True)
            speed += f" {statistics.median(a / b for a, b in pairs):15.2f}"
        print(
            f"{key:<44} {statistics.median(w):7.3f} {statistics.median(cpus[key]):7.3f} "
            f"{statistics.median(rss[key]) / 2**20:8.0f} {wall_ratio:10.2f} {cpu_ratio:9.2f}"
            f" {cpu_ratio_1t:12.2f}"
            f"{speed}{same}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
