"""Benchmark `normscope fold` against the straightforward script, in one run (ratios count).

    python benchmarks/fold_bench.py                  # CPU (and CUDA when torch sees one)
    python benchmarks/fold_bench.py --deepseek       # + the sparse DeepSeek-V3 replica, --experts 8

Builds (once) a ~1 GB Llama-shaped checkpoint in /tmp: 8 layers, d=2048, intermediate 5632,
vocab 32000, real random BF16 matrices, two shards. Every measurement runs in a fresh process
(whole-process time and peak RSS are per process) on a warm page cache; floor and fold run in
turn, medians are printed and the fold/floor bandwidth ratio is taken pair by pair:

- floor: positioned reads of exactly the consumer byte ranges (what any tool must read);
- script: `safe_open(framework="pt")`, `get_tensor` per consumer, `.float().square().sum(0)`;
- fold: `normscope.fold.fold(..., device=cpu)`; its own time is `io.seconds` (after imports);
- fold with `max_memory=256MB`: the peak RSS bound (budget + 500 MB for torch itself);
- fold --device cuda when a GPU is visible (goal: within 1.2x of the floor's read time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CKPT = Path(os.environ.get("NORMSCOPE_FOLD_BENCH", "/tmp/normscope-fold-bench/llama-1b"))
LAYERS, HIDDEN, INTER, VOCAB = 8, 2048, 5632, 32000


def build(path: Path) -> Path:
    """Write the Llama-shaped checkpoint (skipped when it is already there)."""
    if (path / "config.json").is_file():
        return path
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)

    def mat(rows: int, cols: int) -> torch.Tensor:
        return (torch.randn(rows, cols, generator=gen) * 0.02).to(torch.bfloat16)

    def gain() -> torch.Tensor:
        return (0.5 + torch.rand(HIDDEN, generator=gen)).to(torch.bfloat16)

    path.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}, {}]
    shards[0]["model.embed_tokens.weight"] = mat(VOCAB, HIDDEN)
    for i in range(LAYERS):
        s = shards[0 if i < LAYERS // 2 else 1]
        p = f"model.layers.{i}"
        s[f"{p}.input_layernorm.weight"] = gain()
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            s[f"{p}.self_attn.{proj}.weight"] = mat(HIDDEN, HIDDEN)
        s[f"{p}.post_attention_layernorm.weight"] = gain()
        s[f"{p}.mlp.gate_proj.weight"] = mat(INTER, HIDDEN)
        s[f"{p}.mlp.up_proj.weight"] = mat(INTER, HIDDEN)
        s[f"{p}.mlp.down_proj.weight"] = mat(HIDDEN, INTER)
    shards[1]["model.norm.weight"] = gain()
    shards[1]["lm_head.weight"] = mat(VOCAB, HIDDEN)
    weight_map = {}
    for k, s in enumerate(shards, start=1):
        name = f"model-{k:05d}-of-00002.safetensors"
        save_file(s, str(path / name))
        weight_map.update(dict.fromkeys(s, name))
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = {"model_type": "llama", "hidden_size": HIDDEN, "num_hidden_layers": LAYERS}
    (path / "config.json").write_text(json.dumps(config))
    return path


def consumers() -> list[str]:
    """The matrices fold reads on this checkpoint (asserted against fold's own plan)."""
    out = []
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        out += [f"{p}.self_attn.{x}_proj.weight" for x in "qkv"]
        out += [f"{p}.mlp.{x}_proj.weight" for x in ("gate", "up")]
    return [*out, "lm_head.weight"]


# NOTE: peak RSS from /proc's VmHWM, not getrusage: ru_maxrss survives fork + exec, so a child
# would report its parent's peak.
HWM = """def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0
"""

# Each child prints one JSON line: import seconds, work seconds, peak RSS (kB), extras.
CHILD = {
    "floor": """
import json, os, sys, time
{hwm}t0 = time.perf_counter()
sys.path.insert(0, {root!r})
from normscope.sources import open_checkpoint
ck = open_checkpoint({ckpt!r})
t1 = time.perf_counter()
n = 0
for name in {names!r}:
    ref = ck.tensors[name]
    fd = os.open(ref.shard, os.O_RDONLY)
    pos = ref.start
    while pos < ref.end:
        n += len(os.pread(fd, min(64 << 20, ref.end - pos), pos))
        pos += 64 << 20
    os.close(fd)
t2 = time.perf_counter()
print(json.dumps(dict(imports=t1 - t0, work=t2 - t1, bytes=n,
                      rss_kb=hwm())))
""",
    "script": """
import json, time
{hwm}t0 = time.perf_counter()
import torch
from safetensors import safe_open
t1 = time.perf_counter()
out, shards = {{}}, {{}}
index = json.load(open({ckpt!r} + "/model.safetensors.index.json"))["weight_map"]
for name in {names!r}:
    f = shards.get(index[name]) or safe_open({ckpt!r} + "/" + index[name], framework="pt")
    shards[index[name]] = f
    out[name] = f.get_tensor(name).float().square().sum(0)
t2 = time.perf_counter()
print(json.dumps(dict(imports=t1 - t0, work=t2 - t1,
                      rss_kb=hwm())))
""",
    "fold": """
import json, sys, time
{hwm}t0 = time.perf_counter()
sys.path.insert(0, {root!r})
import torch
from normscope.fold import FoldOptions, fold
t1 = time.perf_counter()
r = fold({ckpt!r}, FoldOptions(device={device!r}, max_memory={memory}, experts={experts!r}))
t2 = time.perf_counter()
names = sorted({{c for n in r.norms for c in (*n.consumers, *n.producers)}})
print(json.dumps(dict(imports=t1 - t0, work=r.io.seconds, whole_call=t2 - t1,
                      bytes=r.plan.bytes_planned, blocks=r.plan.blocks,
                      read_s=r.plan.read_seconds, compute_s=r.plan.compute_seconds,
                      wait_s=r.plan.wait_seconds, peak_buffered=r.plan.peak_buffered_bytes,
                      consumers=len(names), folded=r.fold_summary.folded,
                      rss_kb=hwm())))
""",
}


def run(kind: str, ckpt: Path, **kw: object) -> dict[str, float]:
    code = CHILD[kind].format(root=str(ROOT), ckpt=str(ckpt), names=consumers(), hwm=HWM, **kw)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process"] = time.perf_counter() - started
    return result


def warm(ckpt: Path) -> None:
    """Read every shard once, so each contender starts from the same warm page cache."""
    for shard in ckpt.glob("*.safetensors"):
        with open(shard, "rb") as f:
            while f.read(64 << 20):
                pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per contender (median kept)")
    parser.add_argument("--deepseek", action="store_true", help="also the sparse DeepSeek-V3")
    args = parser.parse_args()
    # Built in a child: the parent stays small while the contenders run.
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(HERE)!r}); "
            f"import fold_bench; fold_bench.build(fold_bench.CKPT)",
        ],
        check=True,
    )
    ckpt = CKPT
    size = sum(p.stat().st_size for p in ckpt.glob("*.safetensors"))
    print(f"checkpoint: {ckpt} ({size / 1e9:.2f} GB), cpus: {os.cpu_count()}")
    warm(ckpt)

    def median(runs: list[dict[str, float]]) -> dict[str, float]:
        """Each figure's median over the runs (a contender's row)."""
        return {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    fold_kw = {"device": "cpu", "memory": 2 * 1000**3, "experts": "8"}
    small_kw = {**fold_kw, "memory": 256 * 1000**2}
    # Floor and fold in turn (A B A B ...), so a ratio is taken within a pair, on the same load.
    floors, folds, smalls, ratios = [], [], [], []
    for _ in range(args.repeat):
        floors.append(run("floor", ckpt))
        folds.append(run("fold", ckpt, **fold_kw))
        smalls.append(run("fold", ckpt, **small_kw))
        ratios.append(floors[-1]["work"] / folds[-1]["work"])
    floor, fold, small = median(floors), median(folds), median(smalls)
    script = median([run("script", ckpt) for _ in range(max(1, args.repeat // 3))])
    gb = fold["bytes"] / 1e9
    rows = [
        ("floor (pread of consumer ranges)", floor),
        ("script (safe_open + float().square().sum(0))", script),
        ("fold --device cpu", fold),
        ("fold --device cpu --max-memory 256MB", small),
    ]
    try:
        import torch

        if torch.cuda.is_available():
            cuda = [run("fold", ckpt, **{**fold_kw, "device": "cuda"}) for _ in range(args.repeat)]
            rows.append(("fold --device cuda", median(cuda)))
    except ImportError:
        pass
    print(f"consumer bytes: {gb:.3f} GB in {fold['consumers']} matrices")
    print(
        f"{'contender':48} {'imports s':>9} {'own s':>7} {'process s':>9} {'GB/s':>6} {'RSS MB':>7}"
    )
    for label, r in rows:
        rate = gb / r["work"] if r["work"] else 0.0
        print(
            f"{label:48} {r['imports']:9.3f} {r['work']:7.3f} {r['process']:9.3f} "
            f"{rate:6.2f} {r['rss_kb'] / 1024:7.0f}"
        )
    print(
        f"fold / floor bandwidth, pair by pair: median {statistics.median(ratios):.0%} "
        f"(min {min(ratios):.0%}, max {max(ratios):.0%}, {len(ratios)} pairs; "
        f"load average {os.getloadavg()[0]:.2f})"
    )
    print(f"fold vs script, own time after imports: {script['work'] / fold['work']:.2f}x faster")
    print(f"fold vs script, whole process: {script['process'] / fold['process']:.2f}x")
    print(
        f"fold split: read {fold['read_s']:.3f} s (reader thread), compute "
        f"{fold['compute_s']:.3f} s, waited {fold['wait_s']:.3f} s, {fold['blocks']:.0f} blocks"
    )
    budget = 256 * 1000**2 / 1e6
    print(
        f"256MB budget: peak RSS {small['rss_kb'] / 1024:.0f} MB (bound {budget + 500:.0f} MB), "
        f"peak buffered {small['peak_buffered'] / 1e6:.0f} MB"
    )
    if args.deepseek:
        sys.path.insert(0, str(HERE))
        import replicas

        ds = replicas.build("deepseek-v3")
        r = run("fold", ds, device="cpu", memory=256 * 1000**2, experts="8")
        print(
            f"deepseek-v3 replica, --experts 8 --max-memory 256MB: {r['bytes'] / 1e9:.1f} GB of "
            f"matrices in {r['work']:.1f} s, peak RSS {r['rss_kb'] / 1024:.0f} MB, "
            f"{r['folded']:.0f} norms folded"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
