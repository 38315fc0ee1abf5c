"""The model zoo replayed: every architecture transformers builds, scored against its answer key.

`fixtures/zoo/zoo-<version>.json.gz` (written by `fixtures/zoo/make_zoo.py` from transformers
itself) holds, per architecture, the saved config.json, every saved tensor's name, dtype and
shape, the init values of the 1-D tensors and the norm gains, and the answer key read from the
model object. `replay` writes each architecture as a *sparse* safetensors checkpoint — the header
of every tensor, the bytes of the 1-D tensors and the gains only, the matrices left as holes —
and `score` scans it with normscope (`scanner.measure`, the path of `normscope scan`) and
compares with the key. No test here: `test_zoo.py` holds the targets.

    python tests/zoo.py            # the scores, and every architecture that is not exact
"""

from __future__ import annotations

import gzip
import json
import math
import re
import struct
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

ZOO_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "zoo"
_NP = {
    "float32": ("F32", np.float32, 4),
    "float16": ("F16", np.float16, 2),
    "bfloat16": ("BF16", None, 2),
    "float64": ("F64", np.float64, 8),
    "int64": ("I64", np.int64, 8),
    "int32": ("I32", np.int32, 4),
    "int8": ("I8", np.int8, 1),
    "uint8": ("U8", np.uint8, 1),
    "bool": ("BOOL", np.bool_, 1),
    "float8_e4m3fn": ("F8_E4M3", None, 1),
}


@cache
def load_zoo() -> dict[str, Any]:
    """The newest zoo fixture."""
    path = sorted(ZOO_DIR.glob("zoo-*.json.gz"))[-1]
    data: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return data


def held_out(zoo: dict[str, Any]) -> set[str]:
    """Model types added to transformers after the earlier release the fixture names."""
    earlier = set(zoo["earlier"]["model_types"])
    return {a["model_type"] for a in zoo["architectures"] if a["model_type"] not in earlier}


def _encode(dtype: str, shape: list[int], values: float | list[float]) -> bytes:
    n = math.prod(shape)
    arr = np.full(n, values, np.float64) if isinstance(values, float) else np.asarray(values)
    if dtype == "bfloat16":
        bits = arr.astype(np.float32).view(np.uint32) >> 16
        return bits.astype("<u2").tobytes()
    return arr.astype(_NP[dtype][1]).astype(_NP[dtype][1]().dtype.newbyteorder("<")).tobytes()


def write_sparse(arch: dict[str, Any], folder: Path) -> Path:
    """Write `arch` as `folder/model.safetensors` (holes for every tensor without values) and its
    config.json; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    header: dict[str, Any] = {}
    offset = 0
    writes: list[tuple[int, bytes]] = []
    for entry in arch["tensors"]:
        name, dtype, shape = entry[0], entry[1], entry[2]
        code, _, size = _NP[dtype]
        nbytes = math.prod(shape) * size
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        if len(entry) > 3 and nbytes:
            writes.append((offset, _encode(dtype, shape, entry[3])))
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path = folder / "model.safetensors"
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        start = 8 + len(raw)
        for at, data in writes:
            f.seek(start + at)
            f.write(data)
        f.truncate(start + offset)
    (folder / "config.json").write_text(json.dumps(arch["config"]))
    return folder


@dataclass
class ArchScore:
    """One architecture against its key."""

    model_type: str
    norms: int = 0
    found: int = 0
    missed: list[str] = field(default_factory=list)
    decoys: list[str] = field(default_factory=list)
    param_scored: int = 0
    param_wrong: list[str] = field(default_factory=list)
    identity_wrong: list[str] = field(default_factory=list)
    finals: int = 0
    final_wrong: list[str] = field(default_factory=list)
    """Key finals not read as final, and norms read as final that the key says are not."""
    unknown: int = 0
    role_contradicted: list[str] = field(default_factory=list)
    """Input norms whose role the forward contradicts: an `attn_input` whose output the model
    next fed to an MLP matrix, an `mlp_input` whose output went to attention (a diagnostic,
    not part of `exact`)."""
    error: str | None = None
    """normscope's error when the scan refused the checkpoint."""

    @property
    def exact(self) -> bool:
        if self.norms == 0:  # no norm gains at all: refusing with "no norm" is right
            return self.error is not None and "no norm" in self.error
        return self.error is None and not (
            self.missed
            or self.decoys
            or self.param_wrong
            or self.identity_wrong
            or self.final_wrong
        )

    def kinds(self) -> list[str]:
        """The failure kinds of this architecture."""
        out = []
        for kind, items in (
            ("missed", self.missed),
            ("decoy", self.decoys),
            ("param", self.param_wrong),
            ("identity", self.identity_wrong),
            ("final", self.final_wrong),
        ):
            if items:
                out.append(kind)
        if self.error and not self.exact:
            out.append("error")
        return out


_BY_INIT = {"ones": "standard", "zeros": "offset"}


def expected_param(norm: dict[str, Any]) -> str | None:
    """The key's parametrization (the init: ones standard, zeros offset), or None where it is
    not scored: an init of other values, or a functional probe that contradicts the init."""
    by_init = _BY_INIT.get(norm["init"])
    if norm["probe"] is not None and norm["probe"] != by_init:
        return None
    return by_init


# Module names (whole path components) that are an attention's, an MLP's or a cross-attention's.
_ATTN = {
    "q_proj",
    "k_proj",
    "v_proj",
    "qkv",
    "qkv_proj",
    "query",
    "key",
    "value",
    "Wqkv",
    "c_attn",
    "in_proj",
    "q",
    "k",
    "v",
    "wq",
    "query_key_value",
    "self_attn",
    "attention",
    "attn",
    "q_a_proj",
    "self",
    "SelfAttention",
    "LocalSelfAttention",
}
_MLP = {
    "gate_proj",
    "up_proj",
    "gate_up_proj",
    "fc1",
    "fc_in",
    "w1",
    "w3",
    "wi",
    "wi_0",
    "c_fc",
    "dense_h_to_4h",
    "intermediate",
    "mlp",
    "ffn",
    "feed_forward",
    "router",
    "experts",
    "gate",
    "DenseReluDense",
}
_CROSS = re.compile(r"(encoder_attn|EncDecAttention|cross)", re.IGNORECASE)


def contradicts(role: str, following: str | None) -> bool:
    """Whether the module the forward called right after a norm contradicts its input role."""
    if following is None:
        return False
    parts = set(following.split(".")[-3:])
    attn, mlp = bool(parts & _ATTN), bool(parts & _MLP)
    cross = bool(_CROSS.search(following))
    if role == "attn_input":
        return mlp and not attn
    if role == "mlp_input":
        return attn and not mlp
    if role == "cross_attn_input":
        return not cross and (attn or mlp)
    # An output norm follows its sublayer: its output never goes into that sublayer's matrices.
    if role == "attn_output":
        return attn and not mlp and not cross
    if role == "mlp_output":
        return mlp and not attn
    return False


def score(arch: dict[str, Any], folder: Path) -> ArchScore:
    """Scan the sparse checkpoint of `arch` with normscope and compare with the key."""
    from normscope.errors import NormscopeError
    from normscope.scanner import measure

    out = ArchScore(arch["model_type"])
    key = {t: n for n in arch["norms"] for t in n["tensors"]}
    out.norms = len(key)
    out.finals = sum(1 for n in key.values() if n["final"])
    try:
        measured = measure(write_sparse(arch, folder))
    except NormscopeError as exc:
        out.error = str(exc)
        out.missed = sorted(key)
        return out
    got = {s.name: s for s in measured.report.norms}
    out.found = len(key.keys() & got.keys())
    out.missed = sorted(key.keys() - got.keys())
    out.decoys = sorted(got.keys() - key.keys())
    for name, norm in key.items():
        stats = got.get(name)
        if stats is None:
            continue
        want = expected_param(norm)
        if want is not None:
            out.param_scored += 1
            if stats.parametrization.value != want:
                out.param_wrong.append(name)
            if not stats.identity:
                out.identity_wrong.append(name)
        is_final = stats.role.value == "final"
        if bool(norm["final"]) != is_final:
            out.final_wrong.append(("missing " if norm["final"] else "extra ") + name)
        if stats.role.value == "unknown":
            out.unknown += 1
        if contradicts(stats.role.value, norm.get("next")):
            out.role_contradicted.append(f"{name} ({stats.role.value}, next {norm['next']})")
    return out


def score_all(only: set[str] | None = None) -> tuple[list[ArchScore], list[dict[str, Any]]]:
    """Every built architecture's score, and the records of those that failed to build."""
    zoo = load_zoo()
    scores, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in zoo["architectures"]:
            if only is not None and arch["model_type"] not in only:
                continue
            if arch["status"] != "ok":
                failed.append(arch)
                continue
            scores.append(score(arch, Path(tmp) / arch["model_type"]))
    return scores, failed


def summary(scores: list[ArchScore]) -> dict[str, int]:
    """The totals the targets are written against."""
    return {
        "architectures": len(scores),
        "exact": sum(s.exact for s in scores),
        "norms": sum(s.norms for s in scores),
        "found": sum(s.found for s in scores),
        "decoys": sum(len(s.decoys) for s in scores),
        "param_scored": sum(s.param_scored for s in scores),
        "param_right": sum(s.param_scored - len(s.param_wrong) for s in scores),
        "finals": sum(s.finals for s in scores),
        "final_wrong": sum(len(s.final_wrong) for s in scores),
        "unknown": sum(s.unknown for s in scores),
        "role_contradicted": sum(len(s.role_contradicted) for s in scores),
    }


def main(argv: list[str]) -> None:
    zoo = load_zoo()
    hidden = held_out(zoo)
    show_held = "--held-out" in argv
    scores, failed = score_all()
    seen = [s for s in scores if s.model_type not in hidden]
    held = [s for s in scores if s.model_type in hidden]
    print(f"transformers {zoo['transformers']}: {len(scores)} built, {len(failed)} failed")
    print("seen    ", summary(seen))
    print("held-out", summary(held))
    print("all     ", summary(scores))
    kinds = Counter(k for s in seen for k in s.kinds())
    print("failure kinds (seen):", dict(kinds))
    if "--roles" in argv:
        for s in seen:
            for line in s.role_contradicted:
                print(f"role? {s.model_type}: {line}")
    for s in seen if not show_held else held:
        if not s.exact:
            print(f"-- {s.model_type}: {', '.join(s.kinds())} (unknown {s.unknown}/{s.found})")
            for label, items in (
                ("missed", s.missed),
                ("decoy", s.decoys),
                ("param", s.param_wrong),
                ("identity", s.identity_wrong),
                ("final", s.final_wrong),
            ):
                if items:
                    print(f"   {label}: {items[:6]}")
            if s.error:
                print(f"   error: {s.error[:160]}")


if __name__ == "__main__":
    main(sys.argv[1:])
