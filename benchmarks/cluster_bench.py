"""A 100-checkpoint series from a loopback S3 server: the local executor against Dask.

Builds 100 `checkpoint-<step>` prefixes of a 32-layer Llama-like model (4 shards + index,
F32, 294 tensors, 65 norms) in a moto server running in its own process, then times whole
`normscope series s3://bench/run` processes in alternating rounds, each with an empty header
cache: `--executor local` (auto: a loop, or a process pool once it pays), `--executor local
-j 1`, `--executor dask -j 2` (starts and stops a local 2-worker cluster inside the command),
and `--cluster` to a 2-worker cluster started beforehand (`dask scheduler` + `dask worker`).

    python benchmarks/cluster_bench.py [--count 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from objstore_bench import _free_port, _wait_for  # noqa: E402

LAYERS, HIDDEN, SHARDS = 32, 64, 4


def checkpoint(step: int, folder: Path) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(step)
    drift = 1.0 + step / 20000
    tensors = {"model.embed_tokens.weight": rng.standard_normal((256, HIDDEN), np.float32)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for name in ("input_layernorm", "post_attention_layernorm"):
            tensors[p + name + ".weight"] = (drift + 0.05 * rng.standard_normal(HIDDEN)).astype(
                np.float32
            )
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[p + f"self_attn.{name}.weight"] = np.zeros((HIDDEN, HIDDEN), np.float32)
        for name in ("gate_proj", "up_proj", "down_proj"):
            tensors[p + f"mlp.{name}.weight"] = np.zeros((HIDDEN, HIDDEN), np.float32)
    tensors["model.norm.weight"] = np.full(HIDDEN, drift, np.float32)
    tensors["lm_head.weight"] = np.zeros((256, HIDDEN), np.float32)
    folder.mkdir(parents=True)
    names = list(tensors)
    weight_map = {}
    for k, group in enumerate(np.array_split(np.array(names, dtype=object), SHARDS), start=1):
        file = f"model-{k:05d}-of-{SHARDS:05d}.safetensors"
        save_file({n: tensors[n] for n in group}, str(folder / file), {"format": "pt"})
        weight_map.update(dict.fromkeys(group, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = {"model_type": "llama", "hidden_size": HIDDEN, "num_hidden_layers": LAYERS}
    (folder / "config.json").write_text(json.dumps(config))


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        out = subprocess.run(argv, env=dict(env, NORMSCOPE_CACHE=cache), capture_output=True)
        seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{argv} failed: {out.stderr.decode()[-2000:]}")
    report = json.loads(out.stdout)
    return seconds, report


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(HERE.parent),
    )
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    endpoint = env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    try:
        _wait_for(endpoint)
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="bench")
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.count):
                folder = Path(tmp) / f"checkpoint-{i * 100}"
                checkpoint(i * 100, folder)
                for f in folder.iterdir():
                    s3.upload_file(str(f), "bench", f"run/{folder.name}/{f.name}")
        sched_port = _free_port()
        bin_dir = Path(sys.executable).parent
        procs.append(
            subprocess.Popen(
                [
                    str(bin_dir / "dask"),
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(sched_port),
                    "--no-dashboard",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        address = f"tcp://127.0.0.1:{sched_port}"
        procs.append(
            subprocess.Popen(
                [
                    str(bin_dir / "dask"),
                    "worker",
                    address,
                    "--nworkers",
                    "2",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        time.sleep(4)
        base = [sys.executable, "-m", "normscope", "series", "s3://bench/run", "-f", "json", "-q"]
        cases = {
            "local (auto)": base + ["--executor", "local"],
            "local -j 1 (one loop)": base + ["--executor", "local", "-j", "1"],
            "dask -j 2 (local cluster started in the command)": [
                *base,
                "--executor",
                "dask",
                "-j",
                "2",
            ],
            "dask --cluster (2 workers already running)": base + ["--cluster", address],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        reports: dict[str, dict] = {}
        for _ in range(args.rounds):
            for name, argv in cases.items():
                seconds, reports[name] = timed(argv, env)
                times[name].append(seconds)
        first = next(iter(reports.values()))
        print(
            f"{args.count} checkpoints, {len(first['rows']) // args.count} norms each, "
            f"{first['io']['bytes_read'] / 1e6:.2f} MB read; {args.rounds} rounds, cold cache"
        )
        for name, ts in times.items():
            io = reports[name]["io"]
            print(
                f"  {name:52} median {statistics.median(ts):6.2f} s  (min {min(ts):.2f}; "
                f"executor {io['executor']}, jobs {io['jobs']}, in-report {io['seconds']:.2f} s)"
            )
        same = {json.dumps(r["rows"]) for r in reports.values()}
        print(f"  rows identical across executors: {len(same) == 1}")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
