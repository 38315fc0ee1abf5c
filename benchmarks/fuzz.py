"""Mutation fuzzer of normscope's input boundary (issue #12): no crash on any input.

    python benchmarks/fuzz.py                    # 120,000 cases, every CPU
    python benchmarks/fuzz.py --cases 5000 --jobs 2 --seed 1
    python benchmarks/fuzz.py --worst            # the crafted worst inputs: peak memory, time

`--worst` (issue 28) builds inputs the mutations do not reach — DCP metadata whose pickle memo
unfolds exponentially, 10^6 nested lists, chunks that all point at one blob, a zip bomb in
Megatron's common state, megabytes inside `__metadata__`, a sparse 6 GiB config.json — scans each
in a fresh process and checks the bound: no input under 10 MB on disk may take more than 512 MB
(peak RSS above the process after its imports) or 10 s.

Seeds are the committed fixtures (one checkpoint per architecture family, sharded ones with an
index). Each case copies one seed and applies 1-3 mutations: the 8-byte length prefix, header
bytes, the header's JSON structure (keys dropped, duplicated, nested, odd values), data offsets,
dtypes, NaN/Inf norm data, index and config mutations, odd file names. It runs `normscope.scan`
and, for a Report, every renderer of normscope/render/scan.py; the outcome is a clean report, a
NormscopeError, or a crash, counted by signature (exception type and innermost normscope frame).
Render crashes are counted apart: they are the renderers' (C2-C4 of issue #12).

Bounded: each case runs in a worker process under RLIMIT_AS (--memory-mb, default 4096) and a
time budget (--seconds, default 20, SIGALRM); the peak RSS of each case is measured by resetting
the kernel's high-water mark (/proc/self/clear_refs) before it and reading VmHWM after it.
Deterministic for a given --seed and --cases.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

ODD_VALUES = [
    "null", "true", "[]", "{}", '"x"', "-1", "1.5", "1e400", "NaN", '"\\ud800"',
    "18446744073709551616", "9" * 400, "[" * 200 + "]" * 200, '{"a":' * 130 + "1" + "}" * 130,
]  # fmt: skip
DTYPES = ["F32", "BF16", "F16", "F64", "F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL", "F4", "F99",
          "f32", "", "\ud800", "C128", "F8_E8M0", "I64"]  # fmt: skip
ODD_NAMES = ["²1.safetensors", "m" + "9" * 200 + ".safetensors", "a\nb.safetensors",
             "\x1b[31m.safetensors", "x|y`z.safetensors", " .safetensors",
             "-.safetensors"]  # fmt: skip
MUTATIONS = ("prefix", "header_bytes", "json", "offsets", "dtype", "data", "index", "config",
             "name")  # fmt: skip

_seeds: list[Path] = []
_limit_s = 20


def seeds() -> list[Path]:
    """The committed fixtures that scan cleanly (the broken ones are mutations already)."""
    return [
        path
        for path in sorted((ROOT / "fixtures").iterdir())
        if path.is_dir() and not path.name.startswith("broken") and any(path.glob("*.safetensors"))
    ]


# --- mutations ------------------------------------------------------------------------------------


def _split(raw: bytes) -> tuple[int, bytes, bytes]:
    n = int.from_bytes(raw[:8], "little")
    return n, raw[8 : 8 + n], raw[8 + n :]


def _header_obj(raw: bytes) -> tuple[dict[str, Any], bytes] | None:
    _, header, data = _split(raw)
    try:
        obj = json.loads(header)
    except (ValueError, RecursionError):  # a file an earlier mutation broke
        return None
    return (obj, data) if isinstance(obj, dict) else None


def _pack(obj: dict[str, Any] | str, data: bytes) -> bytes:
    text = obj if isinstance(obj, str) else json.dumps(obj)
    header = text.encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(header)) + header + data


def _mutate_shard(rng: random.Random, raw: bytes, kind: str) -> bytes:
    if kind == "prefix":
        n = int.from_bytes(raw[:8], "little")
        value = rng.choice([0, 1, n - 1, n + 1, n * 2, 2**63, 2**64 - 1, 100_000_001, len(raw)])
        return struct.pack("<Q", max(0, min(value, 2**64 - 1))) + raw[8:]
    if kind == "header_bytes":
        out = bytearray(raw)
        n = min(int.from_bytes(raw[:8], "little"), len(raw) - 8)
        for _ in range(rng.randint(1, 4)):
            at = 8 + rng.randrange(max(1, n))
            op = rng.random()
            if at >= len(out):
                break
            if op < 0.4:
                out[at] = rng.randrange(256)
            elif op < 0.7:
                out[at] = ord(rng.choice('{}[]",:0123456789\\'))
            else:
                del out[at]
        return bytes(out)
    parsed = _header_obj(raw)
    if parsed is None:
        return raw
    obj, data = parsed
    names = [k for k in obj if k != "__metadata__"]
    if not names:
        return raw
    name = rng.choice(names)
    entry = obj[name]
    if kind == "json":
        op = rng.randrange(7)
        if op == 0:
            del obj[name]
        elif op == 1 and isinstance(entry, dict):
            entry.pop(rng.choice(list(entry) or ["dtype"]), None)
        elif op == 2:
            text = json.dumps(obj)
            dup = f"{json.dumps(name)}:{json.dumps(entry)}"
            return _pack(text[:-1] + "," + dup + "}", data)
        elif op == 3:
            text = json.dumps(obj)
            return _pack(text[:-1] + f',"x":{rng.choice(ODD_VALUES)}' + "}", data)
        elif op == 4:
            obj["__metadata__"] = rng.choice([[], {"a": 1}, None, "x", {"a": "b"}, {"a": None}])
        elif op == 5 and isinstance(entry, dict):
            entry[rng.choice(["shape", "data_offsets", "dtype"])] = json.loads(
                rng.choice([v for v in ODD_VALUES if not v.startswith(('"\\u', "NaN"))])
            )
        else:
            obj[name + rng.choice(["\u2028", "\x00", "|", "\n", "[b]"])] = obj.pop(name)
    elif kind == "offsets" and isinstance(entry, dict):
        begin, end = entry.get("data_offsets", [0, 0])
        delta = rng.choice([-1, 1, 2, 4096, -begin, 2**64, 10**160])
        entry["data_offsets"] = [begin + delta, end] if rng.random() < 0.5 else [begin, end + delta]
        if rng.random() < 0.3:
            entry["shape"] = [rng.choice([0, 1, 2**24, 2**27, 2**40, 10**160, 2**64 - 1])]
    elif kind == "dtype" and isinstance(entry, dict):
        entry["dtype"] = rng.choice(DTYPES)
    elif kind == "data" and isinstance(entry, dict):
        begin, end = entry.get("data_offsets", [0, 0])
        patterns = [b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\x80\x7f", b"\xff\xff", b"\x7c\x00"]
        if 0 <= begin < end <= len(data):
            pattern = rng.choice(patterns)
            fill = (pattern * ((end - begin) // len(pattern) + 1))[: end - begin]
            data = data[:begin] + fill + data[end:]
    return _pack(obj, data)


def _mutate_json_file(rng: random.Random, raw: bytes, index: bool) -> bytes:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):  # a file an earlier mutation broke
        return raw
    op = rng.randrange(6)
    if op == 0:
        return rng.choice(
            [b"", b"[", b"[" * 100_000 + b"]" * 100_000, b'{"a":' + b"9" * 4301 + b"}"]
        )
    if index and isinstance(obj, dict) and isinstance(obj.get("weight_map"), dict):
        wm = obj["weight_map"]
        if wm and op in (1, 2, 3):
            key = rng.choice(list(wm))
            wm[key] = rng.choice(
                ["../x.safetensors", "m" + "9" * 4301 + ".safetensors", "", 5, None]
            )
        elif op == 4:
            obj["weight_map"] = rng.choice([[], {}, "x", None])
        else:
            wm["extra.weight"] = next(iter(wm.values()), "x")
    elif isinstance(obj, dict):
        key = rng.choice(["model_type", "hidden_size", "num_hidden_layers", "rms_norm_eps",
                          "architectures", "text_config", "first_k_dense_replace"])  # fmt: skip
        obj[key] = json.loads(rng.choice(ODD_VALUES[:-2] + ["4", "0", "99999999999999999999"]))
        if rng.random() < 0.2:
            obj["model_type"] = rng.choice(["llama\ud800", "x|y", "\x1b[31mred", "", "bert"])
    return json.dumps(obj).encode("utf-8", "surrogatepass")


def build_case(rng: random.Random, seed: Path, folder: Path) -> None:
    """Copy `seed` into `folder` and mutate it 1-3 times."""
    for path in seed.iterdir():
        if path.is_file():
            shutil.copyfile(path, folder / path.name)
    shards = sorted(folder.glob("*.safetensors"))
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(MUTATIONS)
        try:
            shards = _apply(rng, kind, folder, shards)
        except Exception:  # the mutator met a file an earlier mutation broke: skip it
            continue


def _apply(rng: random.Random, kind: str, folder: Path, shards: list[Path]) -> list[Path]:
    """Apply one mutation of `kind`; return the shards as they are named now."""
    if kind in ("index", "config"):
        name = "config.json" if kind == "config" else "model.safetensors.index.json"
        path = folder / name
        if path.exists():
            path.write_bytes(_mutate_json_file(rng, path.read_bytes(), kind == "index"))
    elif kind == "name" and shards:
        shard = rng.choice(shards)
        new = folder / rng.choice(ODD_NAMES)
        if rng.random() < 0.3:
            new = folder / os.fsdecode(b"\xff" + rng.choice([b"", b"1"]) + b".safetensors")
        shard.rename(new)
        shards = sorted(folder.glob("*.safetensors"))
    elif shards:
        shard = rng.choice(shards)
        shard.write_bytes(_mutate_shard(rng, shard.read_bytes(), kind))
    return shards


# --- running one case -----------------------------------------------------------------------------


def _signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if "normscope" in f.filename and "benchmarks" not in f.filename]
    where = mine[-1] if mine else (frames[-1] if frames else None)
    at = f"{Path(where.filename).name}:{where.lineno}" if where else "?"
    return f"{type(exc).__name__} at {at}"


def _init(limit_mb: int, limit_s: int, seed_paths: list[str]) -> None:
    global _seeds, _limit_s
    _seeds, _limit_s = [Path(p) for p in seed_paths], limit_s
    limit = limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # The import cost stays outside the cases.
    import normscope.render.scan
    import normscope.scanner  # noqa: F401


def _hwm_mb() -> int:
    status = Path("/proc/self/status").read_text()
    m = re.search(r"VmHWM:\s+(\d+)", status)
    return int(m.group(1)) // 1024 if m else 0


def _timeout(signum: int, frame: Any) -> None:
    raise TimeoutError("case over its time budget")


def run_case(args: tuple[int, int]) -> tuple[str, str, int, float]:
    """(outcome, signature, peak MB, seconds) of case `number` of run `seed`."""
    from rich.console import Console

    import normscope
    from normscope.errors import NormscopeError
    from normscope.render.common import render_json
    from normscope.render.scan import render_csv, render_markdown, render_table

    number, run_seed = args
    rng = random.Random(run_seed * 1_000_003 + number)
    seed = _seeds[number % len(_seeds)]
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        folder = Path(tmp) / "case"
        folder.mkdir()
        build_case(rng, seed, folder)
        target = folder
        if rng.random() < 0.2:
            shards = sorted(folder.glob("*.safetensors"))
            target = shards[0] if shards else folder
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
        except OSError:
            pass
        started = time.perf_counter()
        signal.signal(signal.SIGALRM, _timeout)
        signal.alarm(_limit_s)
        try:
            try:
                report = normscope.scan(target)
            except NormscopeError:
                return "error", "", _hwm_mb(), time.perf_counter() - started
            except BaseException as exc:
                return "crash", _signature(exc), _hwm_mb(), time.perf_counter() - started
            try:
                render_json(report)
                render_csv(report)
                render_markdown(report, show_all=True)
                console = Console(file=io.StringIO(), width=120, color_system=None)
                for item in render_table(report, show_all=True, width=120):
                    console.print(item)
                # What the CLI writes: UTF-8 (C2-C4 are strings that cannot be written).
                render_markdown(report, show_all=True).encode("utf-8")
                render_csv(report).encode("utf-8")
                render_json(report).encode("utf-8")
            except BaseException as exc:
                return "render_crash", _signature(exc), _hwm_mb(), time.perf_counter() - started
            return "report", "", _hwm_mb(), time.perf_counter() - started
        finally:
            signal.alarm(0)


# --- the worst inputs (issue 28): crafted, each under 10 MB on disk ------------------------------

WORST_MB = 512
WORST_S = 10.0
"""The bound issue 28 sets: no input of under 10 MB may take more than 512 MB or 10 s."""


def _dcp(folder: Path, kind: str = "titan") -> Any:
    """A DCP save written by torch (`tests/dcp_fixtures.py`: torchtitan or Megatron layout) and
    torch's reading of its metadata, for the DCP cases to edit."""
    sys.path.insert(0, str(ROOT / "tests"))
    import dcp_fixtures

    write = dcp_fixtures.write_torchtitan if kind == "titan" else dcp_fixtures.write_megatron
    return dcp_fixtures.written(write, folder)


def _doubling(levels: int) -> Any:
    value: Any = [0]
    for _ in range(levels):
        value = [value, value]
    return value


def _worst_dcp_doubling(folder: Path) -> Path:
    md = _dcp(folder)
    md.state_dict_metadata["norm.weight"].size = _doubling(24)
    (folder / ".metadata").write_bytes(__import__("pickle").dumps(md))
    return folder


def _worst_dcp_nested(folder: Path) -> Path:
    import pickle

    md = _dcp(folder)
    marker = "@@MARK@@"
    md.state_dict_metadata["norm.weight"].size = marker
    raw = pickle.dumps(md, protocol=4)
    n = 10**6
    raw = raw.replace(b"\x8c\x08" + marker.encode(), b"]" * n + b"a" * (n - 1))
    (folder / ".metadata").write_bytes(raw)
    return folder


def _worst_dcp_one_blob(folder: Path) -> Path:
    """64 chunks of 2**20 elements, all pointing at one 2 MB blob: a 2**26-element norm."""
    import dcp_fixtures

    dcp_fixtures.chunks_on_one_blob(folder, _dcp(folder), "norm.weight")
    return folder


def _worst_dcp_pickle_objects(folder: Path) -> Path:
    """9.5 MB of EMPTY_DICT opcodes in `.metadata`: the most objects a byte of pickle makes."""
    _dcp(folder)
    (folder / ".metadata").write_bytes(b"\x80\x04" + b"}" * (9_500_000) + b".")
    return folder


def _worst_dcp_pickle_at_limit(folder: Path, item: bytes = b"") -> Path:
    """9.5 MB of `.metadata`: as many dicts (empty, or holding `item`) in one list as the pickle
    check lets through (`bounds.check_pickle_bytes`), padded with NONE+POP."""
    from normscope.sources.dcp.bounds import PICKLE_FACTOR, PICKLE_SLACK

    _dcp(folder)
    size = 9_500_000
    dicts = (PICKLE_FACTOR * size + PICKLE_SLACK) // 64 - 1
    body = b"\x80\x04](" + (b"}" + item) * dicts + b"e"
    if (size - len(body) - 1) % 2:  # an even padding: the list stays on top of the stack
        body = b"\x80\x04](" + (b"}" + item) * (dicts - 1) + b"e"
    pad = size - len(body) - 1
    (folder / ".metadata").write_bytes(body + b"N0" * (pad // 2) + b".")
    return folder


def _worst_dcp_items_at_limit(folder: Path) -> Path:
    return _worst_dcp_pickle_at_limit(folder, b"K\x00Ns")  # {0: None}


def _worst_common_bomb(folder: Path) -> Path:
    """Megatron's common state item: a 3 MB deflated zip that inflates to 3 GB."""
    import zipfile

    import dcp_fixtures

    md = _dcp(folder, "megatron")
    bomb = io.BytesIO()
    chunk = b"\0" * (1 << 24)
    with (
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("archive/data.pkl", "w", force_zip64=True) as member,
    ):
        for _ in range(192):  # 3 GiB of zeros
            member.write(chunk)
    dcp_fixtures.replace_item(folder, md, "common_state/", bomb.getvalue())
    return folder


def _safetensors(folder: Path, metadata: bytes) -> Path:
    header = (
        b'{"__metadata__":{' + metadata + b'"format":"pt"},'
        b'"model.norm.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    )
    path = folder / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    return path


def _worst_metadata_whitespace(folder: Path) -> Path:
    return _safetensors(folder, b" " * 9_500_000)


def _worst_metadata_keys(folder: Path) -> Path:
    return _safetensors(folder, b"".join(b'"k%d":"",' % i for i in range(800_000)))


def _worst_header_objects(folder: Path) -> Path:
    """A 9.5 MB header whose one odd key holds 3.1 million empty objects."""
    body = b"[" + b"{}," * 3_150_000 + b"{}]"
    header = (
        b'{"model.norm.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"x":' + body + b"}"
    )
    path = folder / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    return path


def _llama(folder: Path) -> None:
    for p in (ROOT / "fixtures" / "llama-trained").iterdir():
        if p.is_file():
            shutil.copyfile(p, folder / p.name)


def _worst_sparse_config(folder: Path) -> Path:
    _llama(folder)
    with (folder / "config.json").open("wb") as handle:
        handle.write(b"{")
        handle.truncate(6 << 30)
    return folder


def _worst_index(folder: Path) -> Path:
    """An index naming 150,000 tensors the shard does not hold."""
    _llama(folder)
    weight_map = {
        f"model.layers.{i}.mlp.up_proj.weight": "model.safetensors" for i in range(150_000)
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


def _torch_zip(folder: Path, pickle_bytes: bytes | None, bomb: bool) -> Path:
    """A `torch.save` state dict whose data.pkl is replaced, or deflated from 3 GiB."""
    import zipfile

    import torch

    path = folder / "pytorch_model.bin"
    torch.save({"model.norm.weight": torch.ones(4)}, path)
    with zipfile.ZipFile(path) as original:
        members = [(i.filename, original.read(i)) for i in original.infolist()]
    kind = zipfile.ZIP_DEFLATED if bomb else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", kind) as out:
        for name, data in members:
            if not name.endswith("data.pkl"):
                out.writestr(zipfile.ZipInfo(name), data)
            elif bomb:
                with out.open(name, "w", force_zip64=True) as member:
                    for _ in range(192):  # 3 GiB of zeros, deflated
                        member.write(b"\0" * (1 << 24))
            else:
                out.writestr(zipfile.ZipInfo(name), pickle_bytes or data)
    return path


def _worst_torch_bomb(folder: Path) -> Path:
    return _torch_zip(folder, None, bomb=True)


def _worst_torch_pickle(folder: Path) -> Path:
    return _torch_zip(folder, b"\x80\x02" + b"}" * 9_500_000 + b".", bomb=False)


WORST = {
    "dcp: size as a 24-level memo doubling": _worst_dcp_doubling,
    "dcp: size as 10^6 nested lists": _worst_dcp_nested,
    "dcp: 64 chunks on one 2 MB blob (2^26-element norm)": _worst_dcp_one_blob,
    "dcp: .metadata of 9.5 MB of EMPTY_DICT opcodes": _worst_dcp_pickle_objects,
    "dcp: .metadata of empty dicts at the pickle check limit": _worst_dcp_pickle_at_limit,
    "dcp: .metadata of {0: None} dicts at the pickle check limit": _worst_dcp_items_at_limit,
    "dcp: common state zip bomb (3 GiB inflated)": _worst_common_bomb,
    "safetensors: 9.5 MB of whitespace in __metadata__": _worst_metadata_whitespace,
    "safetensors: 800k keys in __metadata__": _worst_metadata_keys,
    "safetensors: 3.1M empty objects in the header": _worst_header_objects,
    "torch .bin: data.pkl deflated from 3 GiB": _worst_torch_bomb,
    "torch .bin: data.pkl of 9.5 MB of EMPTY_DICT opcodes": _worst_torch_pickle,
    "config.json: 6 GiB sparse": _worst_sparse_config,
    "index: 150k tensors": _worst_index,
}


def _on_disk(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of a file or folder."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    stats = [p.stat() for p in files]
    return sum(s.st_size for s in stats), sum(s.st_blocks * 512 for s in stats)


def _worst_child(target: str, out: Any) -> None:
    import normscope
    from normscope.errors import NormscopeError

    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    base = _rss_mb()
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    started = time.perf_counter()
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(120)
    try:
        normscope.scan(target)
        outcome = "report"
    except NormscopeError as exc:
        outcome = f"error: {str(exc)[:70]}"
    except BaseException as exc:
        outcome = f"CRASH {_signature(exc)}"
    seconds = time.perf_counter() - started
    out.send((outcome, _hwm_mb(), base, seconds))


def _rss_mb() -> int:
    m = re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(m.group(1)) // 1024 if m else 0


def run_worst(only: str | None = None) -> int:
    """Build each worst input, scan it in a fresh process (imports done first), print its size,
    outcome, peak RSS and time; exit 1 if one under 10 MB takes more than 512 MB or 10 s."""
    ctx = multiprocessing.get_context("fork")
    import torch  # noqa: F401  (DCP sources import it: outside the measurement)

    import normscope.render.scan
    import normscope.scanner  # noqa: F401

    over = 0
    print("| input | on disk (apparent) | outcome | peak RSS | of which the case | seconds |")
    print("|---|--:|---|--:|--:|--:|")
    for label, build in WORST.items():
        if only and only not in label:
            continue
        with tempfile.TemporaryDirectory(prefix="worst-") as tmp:
            folder = Path(tmp) / "case" / "step-10"
            folder.mkdir(parents=True)
            target = build(folder)
            apparent, allocated = _on_disk(target)
            here, there = ctx.Pipe()
            child = ctx.Process(target=_worst_child, args=(str(target), there))
            child.start()
            child.join(180)
            if child.is_alive():
                child.kill()
                result = ("HANG (killed at 180 s)", 0, 0, 180.0)
            else:
                result = here.recv() if here.poll() else (f"died: {child.exitcode}", 0, 0, 0.0)
        outcome, hwm, base, seconds = result
        small = allocated < 10 << 20
        bad = small and (hwm - base > WORST_MB or seconds > WORST_S)
        over += bad
        print(
            f"| {label} | {allocated / 1e6:.1f} MB ({apparent / 1e6:.1f} MB) | {outcome} | "
            f"{hwm} MB | {hwm - base} MB | {seconds:.2f} |" + (" **over**" if bad else "")
        )
    return 1 if over else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=120_000)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory-mb", type=int, default=4096)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument(
        "--worst",
        nargs="?",
        const="",
        metavar="LABEL",
        help="instead of fuzzing: scan each crafted worst input (issue 28) in a fresh process and "
        "print its peak memory and time (LABEL: only inputs whose label holds it)",
    )
    args = ap.parse_args(argv)
    if args.worst is not None:
        return run_worst(args.worst or None)
    seed_paths = [str(p) for p in seeds()]
    started = time.perf_counter()
    counts: collections.Counter[str] = collections.Counter()
    crashes: collections.Counter[str] = collections.Counter()
    renders: collections.Counter[str] = collections.Counter()
    worst = (0, -1)
    slowest = (0.0, -1)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(args.jobs, _init, (args.memory_mb, args.seconds, seed_paths)) as pool:
        work = ((i, args.seed) for i in range(args.cases))
        for i, (outcome, signature, mb, seconds) in enumerate(
            pool.imap(run_case, work, chunksize=64)
        ):
            counts[outcome] += 1
            if outcome == "crash":
                crashes[signature] += 1
            elif outcome == "render_crash":
                renders[signature] += 1
            worst = max(worst, (mb, i))
            slowest = max(slowest, (seconds, i))
    elapsed = time.perf_counter() - started
    print(
        f"{args.cases} cases from {len(seed_paths)} seeds (--seed {args.seed}) in {elapsed:.0f} s"
    )
    print(f"{counts['report']} clean reports, {counts['error']} NormscopeErrors, "
          f"{counts['crash']} crashes, {counts['render_crash']} render crashes")  # fmt: skip
    for title, table in (("crashes", crashes), ("render crashes", renders)):
        for signature, n in table.most_common():
            print(f"  {title}: {n} x {signature}")
    print(f"peak RSS of the worst case: {worst[0]} MB (case {worst[1]}); slowest case "
          f"{slowest[0]:.2f} s (case {slowest[1]})")  # fmt: skip
    return 1 if counts["crash"] else 0


if __name__ == "__main__":
    sys.exit(main())
