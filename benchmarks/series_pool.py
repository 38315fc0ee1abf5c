"""When does a process pool pay in `normscope series`? Serial against a forced pool, by size.

Each measurement is a fresh interpreter that runs `measure_series` once through the library
with a forced executor (`serial`, or `process` with two workers) or `auto` on the first N
checkpoints of a series, header cache off, and prints its in-process wall time; the three are
run back to back, the order rotating by round. Series: the Llama-1B-shaped small series
(`replicas.build_series`), hard-linked Llama-3-70B and DeepSeek-V3 replicas
(`replicas.build_linked_series`). Also printed: the serial time per checkpoint, which is what
`series.auto` sees after its inline scans, so the pool's cost per task and at start-up can be
fitted (`python benchmarks/series_pool.py --rounds 3`), and what `auto` chose.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import replicas  # noqa: E402

CHILD = """
import json, sys, time
from normscope.scanner import ScanOptions
from normscope.schema import Executor
from normscope.series import SeriesOptions, measure_series
paths, kind = json.loads(sys.argv[1]), sys.argv[2]
options = SeriesOptions(
    scan=ScanOptions(cache=False),
    executor=Executor(kind),
    jobs={"serial": 1, "process": 2}.get(kind),
)
started = time.perf_counter()
report = measure_series(paths, options)
print(json.dumps({"wall": time.perf_counter() - started, "io": report.io.executor}))
"""


def _run(paths: list[str], kind: str) -> tuple[float, str]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(paths), kind],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert kind == "auto" or result["io"] == kind, result
    return float(result["wall"]), str(result["io"])


def _checkpoints(root: Path) -> list[str]:
    found = [p for p in root.iterdir() if p.is_dir()]
    return [str(p) for p in sorted(found, key=lambda p: int(p.name.rpartition("-")[2]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    replicas.compile_normscope()
    sets = {
        "llama-1b": (_checkpoints(replicas.build_series(64)), [8, 32, 64]),
        "llama-3-70b": (_checkpoints(replicas.build_linked_series("llama-3-70b", 16)), [4, 16]),
        "deepseek-v3": (_checkpoints(replicas.build_linked_series("deepseek-v3", 8)), [2, 4, 8]),
    }
    print("| series | N | serial s (per ckpt) | pool of 2 s | pool / serial | auto s (chose) |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    for name, (paths, counts) in sets.items():
        for n in counts:
            walls: dict[str, list[float]] = {"serial": [], "process": [], "auto": []}
            chose = set()
            for r in range(args.rounds):
                kinds = ["serial", "process", "auto"]
                for kind in kinds[r % 3 :] + kinds[: r % 3]:
                    wall, used = _run(paths[:n], kind)
                    walls[kind].append(wall)
                    if kind == "auto":
                        chose.add(used)
            s, p, a = (statistics.median(walls[k]) for k in ("serial", "process", "auto"))
            rows.append({"series": name, "n": n, **walls, "auto_chose": sorted(chose)})
            print(
                f"| {name} | {n} | {s:.3f} ({s / n * 1000:.1f} ms) | {p:.3f} | {p / s:.2f} "
                f"| {a:.3f} ({', '.join(sorted(chose))}) |"
            )
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "series_pool.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
