"""Hub benchmark: serve a sparse replica from the loopback fake Hub (tests/hubserver.py) with an
injected latency per request, scan it with `normscope scan org/name`, count the requests.

    python benchmarks/hub_bench.py [deepseek-v3] [--latency 0.05]

The fake Hub keeps each file's bytes in memory; a 688 GB replica cannot be, so shards are served
from `SparseBlob`s: `len()` and slices read the replica file with os.pread, and the sha256 (the
LFS oid, used only as the CDN blob name and etag) is a hash of the file's name and size instead
of its content. Everything else is the fake Hub unchanged: model_info, /resolve 302 to the CDN,
ranged GETs, the request log with the body bytes written.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER = HERE.parent / "tests" / "hubserver.py"
REPO_IDS = {
    "deepseek-v3": "deepseek-ai/DeepSeek-V3",
    "llama-3-70b": "meta-llama/Meta-Llama-3-70B",
    "qwen3-next-80b-a3b": "Qwen/Qwen3-Next-80B-A3B-Instruct",
}


def load_server() -> object:
    spec = importlib.util.spec_from_file_location("hubserver", SERVER)
    if spec is None or spec.loader is None:
        raise ImportError(SERVER)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["hubserver"] = mod
    spec.loader.exec_module(mod)
    return mod


class SparseFile:
    """Bytes-like view of a file: len() and slicing (os.pread); nothing is held in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def __getitem__(self, key: slice) -> bytes:
        if not isinstance(key, slice):
            raise TypeError("SparseFile supports slices only")
        start, stop, step = key.indices(self.size)
        if step != 1:
            raise ValueError("step")
        out = bytearray()
        while start < stop:
            chunk = os.pread(self.fd, min(stop - start, 1 << 24), start)
            if not chunk:
                break
            out += chunk
            start += len(chunk)
        return bytes(out)


def make_blob_class(hubserver: object) -> type:
    base = hubserver.Blob  # type: ignore[attr-defined]

    @dataclass(frozen=True)
    class SparseBlob(base):  # type: ignore[misc, valid-type]
        """A served shard backed by a sparse file; ids derived from name and size."""

        name: str = ""

        @cached_property
        def sha256(self) -> str:  # type: ignore[override]
            return hashlib.sha256(f"{self.name}:{len(self.data)}".encode()).hexdigest()

        @cached_property
        def pointer(self) -> bytes:  # type: ignore[override]
            return (
                f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
                f"size {len(self.data)}\n"
            ).encode()

        @cached_property
        def oid(self) -> str:  # type: ignore[override]
            body = self.pointer
            return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()

    # NOTE: frozen dataclasses with cached_property need a __dict__: drop slots if any.
    return SparseBlob


def serve_replica(hubserver: object, hub: object, repo_id: str, directory: Path) -> str:
    """Register `directory` as repo `repo_id`'s main branch; return the commit id."""
    Blob = hubserver.Blob  # type: ignore[attr-defined]
    SparseBlob = make_blob_class(hubserver)
    files: dict[str, object] = {}
    for p in sorted(directory.iterdir()):
        if not p.is_file() or p.name == "replica.json":
            continue
        if p.suffix == ".safetensors":
            files[p.name] = SparseBlob(SparseFile(p), True, name=p.name)
        else:
            files[p.name] = Blob(p.read_bytes(), False)
    repo = hubserver.Repo(repo_id)  # type: ignore[attr-defined]
    seed = json.dumps({n: b.oid for n, b in sorted(files.items())})  # type: ignore[attr-defined]
    commit = hashlib.sha1(f"{repo_id}\0{seed}".encode()).hexdigest()
    repo.commits[commit] = files
    repo.branches["main"] = commit
    hub.repos[repo_id] = repo  # type: ignore[attr-defined]
    return commit


def normscope_bin() -> str:
    b = Path(sys.executable).parent / "normscope"
    return str(b) if b.exists() else "normscope"


# Until `normscope scan` routes Hub repos to normscope.hub, the library entry point is measured.
_LIBRARY = (
    "import sys\n"
    "from normscope.sources.hub import open_hub_checkpoint\n"
    "from normscope.render.common import render_json\n"
    "from normscope.scanner import ScanOptions, analyze_checkpoint\n"
    "ckpt = open_hub_checkpoint(sys.argv[1])\n"
    "sys.stdout.write(render_json(analyze_checkpoint(ckpt, ScanOptions()).report))\n"
)
MODE: dict[str, object] = {"how": "cli"}


ANCHOR = HERE / "competitors" / "hub_anchor.py"


def command(repo_id: str) -> list[str]:
    if MODE["how"] == "anchor":
        return [sys.executable, str(ANCHOR), repo_id, str(MODE.get("threads", 8))]
    if MODE["how"] == "cli":
        return [normscope_bin(), "scan", repo_id, "--format", "json", "-q"]
    return [sys.executable, "-c", _LIBRARY, repo_id]


def scan_once(
    hub: object, repo_id: str, env_extra: dict[str, str] | None = None, warm: bool = True
) -> dict:
    """One cold `normscope scan repo_id --format json` (fresh caches) against the fake hub, then
    (`warm`) the same scan again with the caches the first one left: its requests and bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HF_", "HUGGINGFACE_", "NORMSCOPE_"))
        }
        env |= {
            "HF_ENDPOINT": hub.endpoint,  # type: ignore[attr-defined]
            "HF_HOME": f"{tmp}/hf",
            "HF_HUB_CACHE": f"{tmp}/hf/hub",
            "NORMSCOPE_CACHE": f"{tmp}/ns",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            **(env_extra or {}),
        }
        hub.reset_log()  # type: ignore[attr-defined]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(
            command(repo_id),
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        log = list(hub.log)  # type: ignore[attr-defined]
        second = None
        if warm and p.returncode == 0:
            hub.reset_log()  # type: ignore[attr-defined]
            t0 = time.perf_counter()
            again = subprocess.run(
                command(repo_id), capture_output=True, text=True, env=env, check=False
            )
            second = {
                "wall": time.perf_counter() - t0,
                "rc": again.returncode,
                "requests": len(hub.log),  # type: ignore[attr-defined]
                "bytes_sent": sum(s.body_bytes for s in hub.log),  # type: ignore[attr-defined]
            }
    out: dict = {"wall": wall, "cpu": cpu, "rc": p.returncode}
    if p.returncode != 0:
        out["stderr"] = p.stderr[-3000:]
        return out
    if MODE["how"] == "anchor":
        rep = {"io": None, "norms": p.stdout.splitlines()}
    else:
        rep = json.loads(p.stdout)
    # Requests to a shard: its /resolve/ redirect and the CDN's ranged GETs (not the index, whose
    # name also contains ".safetensors").
    shard_reqs = [s for s in log if s.path.endswith(".safetensors") or s.server == "cdn"]
    out |= {
        "requests": len(log),
        "requests_hub": sum(s.server == "hub" for s in log),
        "requests_cdn": sum(s.server == "cdn" for s in log),
        "requests_api": sum(s.path.startswith("/api/") for s in log),
        "requests_shards": len(shard_reqs),
        "requests_resolve_shards": sum(
            s.server == "hub" and s.path.endswith(".safetensors") for s in log
        ),
        "head_requests": sum(s.method == "HEAD" for s in log),
        "bytes_sent": sum(s.body_bytes for s in log),
        "bytes_sent_shards": sum(s.body_bytes for s in shard_reqs),
        "requests_cdn_from_0": sum(
            s.server == "cdn" and (s.range or "").startswith("bytes=0-") for s in log
        ),
        "io": rep["io"],
        "norms": len(rep["norms"]),
        "warm": second,
    }
    return out


def run(name: str, replica: Path, latencies: list[float], rounds: int, log=print) -> dict:
    hubserver = load_server()
    results: dict = {"replica": name, "repo_id": REPO_IDS[name], "latencies": {}, "mode": MODE}
    manifest = json.loads((replica / "replica.json").read_text())
    for latency in latencies:
        hub = hubserver.FakeHub(latency=latency)  # type: ignore[attr-defined]
        serve_replica(hubserver, hub, REPO_IDS[name], replica)
        runs = []
        with hubserver.running(hub):  # type: ignore[attr-defined]
            for r in range(rounds):
                res = scan_once(hub, REPO_IDS[name])
                if res["rc"] != 0 and MODE["how"] == "cli" and "no such file" in res["stderr"]:
                    log(
                        "  `normscope scan org/name` does not reach the Hub yet: measuring "
                        "normscope.sources.hub.open_hub_checkpoint + analyze_checkpoint instead"
                    )
                    MODE["how"] = "library"
                    res = scan_once(hub, REPO_IDS[name])
                if res["rc"] != 0:
                    log(f"  hub scan failed (latency {latency}): {res.get('stderr', '')[-800:]}")
                    results["latencies"][str(latency)] = {"error": res.get("stderr", "")}
                    break
                runs.append(res)
                log(
                    f"  [{r + 1}/{rounds}] hub latency {latency * 1e3:.0f} ms: "
                    f"{res['wall']:.2f} s, "
                    f"{res['requests']} requests ({res['requests_shards']} to shards), "
                    f"{res['bytes_sent']:,} bytes"
                )
        if runs:
            med = sorted(runs, key=lambda x: x["wall"])[len(runs) // 2]
            results["latencies"][str(latency)] = med | {
                "wall_median": statistics.median(x["wall"] for x in runs),
                "wall_min": min(x["wall"] for x in runs),
                "n": len(runs),
                "shards": manifest["shards_count"],
                "need_bytes": manifest["header_bytes"] + manifest["norm_bytes"],
                "index_bytes": manifest["index_bytes"],
            }
    return results


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("name", nargs="?", default="deepseek-v3")
    ap.add_argument("--latency", type=float, action="append")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--anchor",
        type=int,
        metavar="THREADS",
        help="measure competitors/hub_anchor.py with THREADS threads for the norms, not normscope",
    )
    args = ap.parse_args()
    if args.anchor:
        MODE["how"] = "anchor"
        MODE["threads"] = args.anchor
    sys.path.insert(0, str(HERE))
    import replicas

    d = replicas.build(args.name)
    replicas.compile_normscope()
    res = run(args.name, d, args.latency or [0.0, 0.05], args.rounds)
    print(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
