"""s3fs (fsspec) against obstore for normscope's many-small-ranges pattern, on loopback moto.

The pattern is a DeepSeek-V3 light scan: 163 shard headers (11.5 MB) and 252 norm ranges
(2.1 MB). moto keeps objects in memory, so each object holds the real header followed by the
real norm bytes packed (the requests, their sizes and their concurrency are those of a scan of
the 688 GB layout; only the offsets of the norms differ). Each client reads the same ranges:
all headers, then all norms, at most IN_FLIGHT requests at once, in alternating rounds.

    python benchmarks/replicas.py deepseek-v3 && python benchmarks/objstore_bench.py
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
REPLICA = HERE / "out" / "replicas" / "deepseek-v3"
IN_FLIGHT = 16
ROUNDS = 5
BUCKET = "bench"


def pattern() -> tuple[dict[str, bytes], list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """Objects to upload, header ranges and norm ranges (key, start, end)."""
    from normscope.sources import open_checkpoint
    from normscope.sources.local import pread_spans, read_header

    ckpt = open_checkpoint(REPLICA)
    objects: dict[str, bytes] = {}
    headers, norms = [], []
    by_shard: dict[str, list] = {}
    for ref in ckpt.tensors.values():
        if len(ref.shape) == 1 and "norm" in ref.name:
            by_shard.setdefault(ref.shard, []).append(ref)
    for shard in ckpt.shards:
        key = "ds/" + Path(shard.path).name
        raw = read_header(Path(shard.path))
        body = bytearray(raw)
        headers.append((key, 0, len(raw)))
        refs = sorted(by_shard.get(shard.path, []), key=lambda r: r.start)
        data = pread_spans(shard.path, shard.path, [(r.start, r.end) for r in refs])
        for r in refs:
            norms.append((key, len(body), len(body) + r.nbytes))
            body += data[(shard.path, r.start, r.end)]
        objects[key] = bytes(body)
    return objects, headers, norms


def run_s3fs(endpoint: str, ranges: list[tuple[str, int, int]]) -> int:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, anon=False, skip_instance_cache=True)
    paths = [f"{BUCKET}/{k}" for k, _, _ in ranges]
    got = fs.cat_ranges(
        paths, [s for _, s, _ in ranges], [e for _, _, e in ranges], batch_size=IN_FLIGHT
    )
    return sum(len(g) for g in got)


def run_s3fs_threads(endpoint: str, ranges: list[tuple[str, int, int]]) -> int:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        got = pool.map(lambda r: fs.cat_file(f"{BUCKET}/{r[0]}", start=r[1], end=r[2]), ranges)
        return sum(len(g) for g in got)


def _obstore(endpoint: str):  # type: ignore[no-untyped-def]
    from obstore.store import S3Store

    return S3Store(BUCKET, endpoint=endpoint, client_options={"allow_http": True})


def run_obstore_async(endpoint: str, ranges: list[tuple[str, int, int]]) -> int:
    import obstore

    store = _obstore(endpoint)

    async def main() -> int:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(key: str, start: int, end: int) -> int:
            async with gate:
                return len(await obstore.get_range_async(store, key, start=start, end=end))

        return sum(await asyncio.gather(*(one(*r) for r in ranges)))

    return asyncio.run(main())


def run_obstore_threads(endpoint: str, ranges: list[tuple[str, int, int]]) -> int:
    import obstore

    store = _obstore(endpoint)
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        got = pool.map(lambda r: obstore.get_range(store, r[0], start=r[1], end=r[2]), ranges)
        return sum(len(g) for g in got)


if os.environ.get("BENCH_PATTERN"):  # a cold run in a fresh interpreter (`cold`)
    import json

    _saved = json.loads(Path(os.environ["BENCH_PATTERN"]).read_text())
    HEADERS = [tuple(r) for r in _saved["headers"]]
    NORMS = [tuple(r) for r in _saved["norms"]]

CLIENTS = {
    "s3fs cat_ranges": run_s3fs,
    "s3fs threads": run_s3fs_threads,
    "obstore async": run_obstore_async,
    "obstore threads": run_obstore_threads,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(endpoint: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
        except OSError:  # noqa: PERF203 - polling until the server answers
            time.sleep(0.1)
        else:
            return
    raise SystemExit(f"moto server did not start at {endpoint}")


def cold(name: str, endpoint: str) -> float:
    """One fresh interpreter: import, client, headers + norms (what one `scan` pays)."""
    code = (
        f"import sys, time; t = time.perf_counter(); sys.path.insert(0, {str(HERE)!r}); "
        "import objstore_bench as b; "
        f"b.CLIENTS[{name!r}]({endpoint!r}, b.HEADERS); "
        f"b.CLIENTS[{name!r}]({endpoint!r}, b.NORMS); "
        "print(time.perf_counter() - t)"
    )
    env = dict(os.environ, BENCH_PATTERN=str(HERE / "out" / "objstore_pattern.json"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    objects, headers, norms = pattern()
    # The server runs in its own process: in-process, it competes with the clients for the GIL.
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    _wait_for(endpoint)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for key, body in objects.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    import json

    (HERE / "out" / "objstore_pattern.json").write_text(
        json.dumps({"headers": headers, "norms": norms})
    )
    want = sum(e - s for _, s, e in headers + norms)
    print(
        f"{len(headers)} headers + {len(norms)} norm ranges = {len(headers) + len(norms)} "
        f"requests, {want / 1e6:.2f} MB; {IN_FLIGHT} in flight; {ROUNDS} rounds"
    )
    times: dict[str, list[float]] = {name: [] for name in CLIENTS}
    for _ in range(ROUNDS):
        for name, client in CLIENTS.items():
            started = time.perf_counter()
            got = client(endpoint, headers) + client(endpoint, norms)
            times[name].append(time.perf_counter() - started)
            assert got == want, (name, got, want)
    for name, ts in times.items():
        print(
            f"{name:18} median {statistics.median(ts):.3f} s  min {min(ts):.3f} s  "
            f"({(len(headers) + len(norms)) / statistics.median(ts):.0f} requests/s)"
        )
    for name in CLIENTS:
        runs = sorted(cold(name, endpoint) for _ in range(3))
        print(
            f"{name:18} cold (fresh interpreter: import + client + all ranges): "
            f"median {runs[1]:.3f} s"
        )
    server.terminate()
    server.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
