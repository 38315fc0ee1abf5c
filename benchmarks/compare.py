"""Before/after: time `normscope scan` from other source trees against the installed one.

    python benchmarks/compare.py --tree /tmp/patched [--tree DIR ...] [--replica deepseek-v3]

Each DIR holds a `normscope/` package (say, a copy of the working tree with a fix applied); it
runs as `PYTHONPATH=DIR python -m normscope scan REPLICA --format json`, whole-process, in
alternating rounds with the installed normscope, the floor and the safe_open script, so the
ratios come from one run. Checks that every tree produces the same report (io.seconds aside).
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
    ap.add_argument("--replica", default="deepseek-v3", choices=list(replicas.LAYOUTS))
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    src = replicas.build(args.replica)
    py = harness.PY
    scan = [py, "-m", "normscope", "scan", str(src), "--format", "json"]
    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        "normscope (installed)": (scan, dict(os.environ)),
    }
    for tree in args.tree:
        if not (tree / "normscope" / "__init__.py").is_file():
            raise SystemExit(f"{tree} holds no normscope/ package")
        variants[f"normscope ({tree})"] = (scan, dict(os.environ, PYTHONPATH=str(tree)))
    variants["floor"] = ([py, str(harness.COMP / "floor.py"), str(src)], dict(os.environ))
    variants["safe_open script"] = (
        [py, str(harness.COMP / "safe_open_script.py"), str(src)],
        dict(os.environ),
    )
    # -m puts the current directory first on sys.path: run from an empty one, so PYTHONPATH
    # decides which normscope is imported.
    os.chdir(tempfile.mkdtemp())
    walls: dict[str, list[float]] = {k: [] for k in variants}
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
            rss[key].append(run.maxrss)
            if key.startswith("normscope"):
                rep = json.loads(run.stdout)
                rep["io"].pop("seconds", None)
                reports[key] = rep
    base = reports["normscope (installed)"]
    floor = statistics.median(walls["floor"])
    so = statistics.median(walls["safe_open script"])
    print(f"{args.replica}, {args.rounds} alternating rounds")
    print(
        f"{'command':<44} {'median':>8} {'min':>7} {'RSS MiB':>8} {'/ floor':>8} "
        f"{'safe_open /':>12}"
    )
    for key, w in walls.items():
        m = statistics.median(w)
        same = (
            ""
            if key not in reports
            else (" same report" if reports[key] == base else " REPORT DIFFERS")
        )
        print(
            f"{key:<44} {m:8.3f} {min(w):7.3f} {statistics.median(rss[key]) / 2**20:8.0f} "
            f"{m / floor:8.2f} {so / m:12.2f}{same}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
