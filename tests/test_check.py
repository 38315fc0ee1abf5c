"""`normscope check`: policy loading and precedence, each check, selectors, formats, exit codes."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import llama_config, llama_tensors, write_checkpoint
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from normscope.cli import app
from normscope.errors import ConfigError
from normscope.gates import run_checks
from normscope.policy import PolicyOverrides, load_policy, thresholds_for
from normscope.scanner import ScanOptions, measure
from normscope.schema import CheckName, Parametrization, Policy, Role, Severity, Thresholds, Verdict
from normscope.scope import parse_scope

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

runner = CliRunner()
H = 8


def _deepseek(
    root: Path,
    final: float = 1.0,
    enorm: float = 1.0,
    layer0: float = 1.0,
    nan_in: str | None = None,
) -> Path:
    """A tiny DeepSeek-V3-style checkpoint with one MTP depth stored as layer 2."""
    t: dict[str, np.ndarray] = {"model.embed_tokens.weight": np.ones((4, H), np.float32)}
    for i in range(3):
        t[f"model.layers.{i}.input_layernorm.weight"] = np.full(
            H, layer0 if i == 0 else 1.0, np.float32
        )
        t[f"model.layers.{i}.post_attention_layernorm.weight"] = np.ones(H, np.float32)
        t[f"model.layers.{i}.self_attn.q_a_layernorm.weight"] = np.ones(4, np.float32)
    t["model.layers.2.enorm.weight"] = np.full(H, enorm, np.float32)
    t["model.layers.2.hnorm.weight"] = np.ones(H, np.float32)
    t["model.layers.2.eh_proj.weight"] = np.ones((H, 2 * H), np.float32)
    t["model.layers.2.shared_head.norm.weight"] = np.ones(H, np.float32)
    t["model.norm.weight"] = np.full(H, final, np.float32)
    if nan_in is not None:
        t[nan_in] = t[nan_in].copy()
        t[nan_in][1] = np.nan
    config = {
        "model_type": "deepseek_v3",
        "hidden_size": H,
        "num_hidden_layers": 2,
        "num_nextn_predict_layers": 1,
    }
    return write_checkpoint(root, t, config)


def _check(*args: str) -> object:
    return runner.invoke(app, ["check", *args])


# --- selectors -----------------------------------------------------------------------------------


def test_scope_selectors(tmp_path: Path) -> None:
    norms = measure(_deepseek(tmp_path / "c")).report.norms
    names = lambda text: {n.name for n in norms if parse_scope(text)(n)}  # noqa: E731
    assert names("final") == {"model.norm.weight"}
    assert names("mtp") == {n.name for n in norms if n.name.startswith("model.layers.2.")}
    assert names("default") == names("final,mtp")
    assert names("all") == {n.name for n in norms}
    assert names("role=mlp_input") == {
        f"model.layers.{i}.post_attention_layernorm.weight" for i in (0, 1, 2)
    }
    # MTP norms have no trunk layer: layer selectors never match them.
    assert names("layer>=1") == {
        "model.layers.1.input_layernorm.weight",
        "model.layers.1.post_attention_layernorm.weight",
        "model.layers.1.self_attn.q_a_layernorm.weight",
    }
    assert names("layer<1&role=latent") == {"model.layers.0.self_attn.q_a_layernorm.weight"}
    assert names("depth=1&role=mtp_final") == {"model.layers.2.shared_head.norm.weight"}
    assert names("module=main&group=output") == set()
    assert names("name=*enorm*") == {"model.layers.2.enorm.weight"}
    for bad in ("role=nope", "layer>=x", "colour=red", "final,,mtp", "module>main", "bogus"):
        with pytest.raises(ConfigError):
            parse_scope(bad)


# --- checks --------------------------------------------------------------------------------------


def test_band_violation_names_tensor_value_threshold_and_fix(tmp_path: Path) -> None:
    ckpt = _deepseek(tmp_path / "c", final=0.27, enorm=2.5)
    result = _check(str(ckpt), "-q")
    assert result.exit_code == 1
    out = result.stdout
    assert "band: 2 violation(s)" in out
    assert "model.norm.weight: final norm ratio 0.270 is below low 0.4 (collapse)" in out
    assert "lower the MTP loss weight" in out and "about 0.27x its intended size" in out
    assert "MTP 1 mtp_embedding ratio 2.500 is above high 1.8 (explosion)" in out
    assert "add an RMSNorm at the input of each MTP module" in out
    assert out.splitlines()[-1].startswith("FAIL: 2 error(s), 0 warning(s)")


def test_healthy_checkpoint_passes(tmp_path: Path) -> None:
    result = _check(str(_deepseek(tmp_path / "c", layer0=0.1)), "-q")
    # The collapsed layer-0 input norm is outside the default scope (final + MTP).
    assert result.exit_code == 0, result.stdout
    assert result.stdout.startswith("PASS")
    wide = _check(str(_deepseek(tmp_path / "d", layer0=0.1)), "-q", "--scope", "all")
    assert wide.exit_code == 1
    assert "model.layers.0.input_layernorm.weight" in wide.stdout
    assert "compare with earlier checkpoints" in wide.stdout


def test_severity_warn_reports_without_failing(tmp_path: Path) -> None:
    ckpt = _deepseek(tmp_path / "c", final=0.27)
    result = _check(str(ckpt), "-q", "--severity", "band=warn")
    assert result.exit_code == 0
    assert "warn model.norm.weight" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("PASS, 1 warning(s)")
    off = _check(str(ckpt), "-q", "--severity", "band=off")
    assert off.exit_code == 0 and "band" not in off.stdout.split("checks:")[1]
    bad = _check(str(ckpt), "--severity", "band=loud")
    assert bad.exit_code == 2 and "band" in bad.stderr
    bad = _check(str(ckpt), "--severity", "colour=warn")
    assert bad.exit_code == 2 and "unknown check" in bad.stderr


def test_nonfinite_always_fails_whatever_the_scope(tmp_path: Path) -> None:
    ckpt = _deepseek(tmp_path / "c", nan_in="model.layers.0.input_layernorm.weight")
    result = _check(str(ckpt), "-q", "--severity", "band=off")
    assert result.exit_code == 1
    assert "finite: 1 violation(s)" in result.stdout
    assert "holds NaN or Inf" in result.stdout


def test_expect_init(tmp_path: Path) -> None:
    init = write_checkpoint(tmp_path / "init", llama_tensors(hidden=H), llama_config(hidden=H))
    assert _check(str(init), "--expect-init", "-q").exit_code == 0
    g = np.ones(H, np.float32)
    g[5] = 1.25
    moved = write_checkpoint(
        tmp_path / "moved", llama_tensors(hidden=H, final=g), llama_config(hidden=H)
    )
    result = _check(str(moved), "--expect-init", "-q", "-f", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    failed = [f for f in data["findings"] if f["check"] == "init" and not f["passed"]]
    assert [(f["subject"], f["value"]) for f in failed] == [("model.norm.weight", 0.25)]
    assert "max |g - 1| = 0.25 at channel 5" in failed[0]["message"]
    passed = [f for f in data["findings"] if f["check"] == "init" and f["passed"]]
    assert len(passed) == 2 * 2


def test_expect_mtp(tmp_path: Path) -> None:
    ds = _deepseek(tmp_path / "ds")
    assert _check(str(ds), "--expect-mtp", "1", "-q").exit_code == 0
    two = _check(str(ds), "--expect-mtp", "2", "-q")
    assert two.exit_code == 1
    assert "MTP depth 1, expected 2 (missing depth 2: no norms)" in two.stdout
    llama = write_checkpoint(tmp_path / "llama", llama_tensors(hidden=H), llama_config(hidden=H))
    result = _check(str(llama), "--expect-mtp", "1", "-q")
    assert result.exit_code == 1 and "Hugging Face re-saves drop them" in result.stdout


def test_baseline_drift_and_band_change(tmp_path: Path) -> None:
    base = _deepseek(tmp_path / "base")
    near = _deepseek(tmp_path / "near", final=0.95)
    far = _deepseek(tmp_path / "far", final=0.3)
    assert _check(str(near), "--baseline", str(base), "--max-drift", "0.1", "-q").exit_code == 0
    drift = _check(str(near), "--baseline", str(base), "--max-drift", "0.01", "-q")
    assert drift.exit_code == 1
    assert "final norm moved 5.0% since the baseline (limit 1%)" in drift.stdout
    band = _check(str(far), "--baseline", str(base), "-q", "--severity", "band=off")
    assert band.exit_code == 1
    assert "band_change: 1 violation(s)" in band.stdout
    assert "final norm band balanced -> collapse (ratio 1.000 -> 0.300)" in band.stdout


def test_run_checks_findings_cover_every_check(tmp_path: Path) -> None:
    ckpt = measure(_deepseek(tmp_path / "c"))
    policy = Policy(expect_init=True, expect_mtp=1, max_drift=0.1)
    result = run_checks(ckpt, policy, ckpt)
    # Two trunk layers give no norm enough peers for a verdict: the anomaly check has nothing
    # to say here (tests/test_verdict.py covers it).
    assert {f.check for f in result.findings} == set(CheckName) - {CheckName.anomaly}
    assert result.verdict is Verdict.passed and result.errors == 0


# --- configuration -------------------------------------------------------------------------------


def test_pyproject_is_found_upward_and_flags_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[project]\nname = 'x'\n\n[tool.normscope]\nlow = 0.2\nscope = ['final', 'role=qk']\n"
        "[tool.normscope.severity]\nband = 'warn'\n[tool.normscope.roles.qk]\nhigh = 5.0\n"
    )
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    policy = load_policy()
    assert (policy.low, policy.high, policy.scope.text) == (0.2, 1.8, "final,role=qk")
    assert policy.severity.band is Severity.warn
    # The role table sets only `high`: its `low` is the policy's (0.2 here), not a default.
    assert [(r.role, r.low, r.high) for r in policy.roles] == [(Role.qk, None, 5.0)]
    assert thresholds_for(policy, Role.qk) == Thresholds(low=0.2, high=5.0)
    assert thresholds_for(load_policy(overrides=PolicyOverrides(high=3.0)), Role.final).high == 3.0
    assert policy.origin == ("defaults", str(tmp_path / "pyproject.toml"))
    flagged = load_policy(overrides=PolicyOverrides(low=0.3, severity={"band": "error"}))
    assert (flagged.low, flagged.scope.text, flagged.severity.band) == (
        0.3,
        "final,role=qk",
        Severity.error,
    )
    assert flagged.origin[-1] == "flags"


def test_show_config_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "policy.toml"
    cfg.write_text('high = 2.5\nmax_drift = 0.15\nexpect_mtp = 1\nparametrization = "offset"\n')
    result = _check("--config", str(cfg), "--show-config", "--low", "0.3")
    assert result.exit_code == 0, result.stderr
    data = tomllib.loads(result.stdout)["tool"]["normscope"]
    assert data["low"] == 0.3 and data["high"] == 2.5 and data["max_drift"] == 0.15
    assert data["expect_mtp"] == 1 and data["parametrization"] == "offset"
    assert data["severity"] == {
        "band": "error",
        "drift": "error",
        "band_change": "error",
        "init": "error",
        "mtp": "error",
        "anomaly": "warn",
        "final_band": "warn",
        "zero_channels": "error",
        "offset": "error",
        "identical": "error",
        "mtp_declared": "error",
        "norm_dtype": "error",
    }
    assert data["anomaly"] == {
        "factor": 2.0,
        "mad_k": 3.5,
        "min_factor": 1.25,
        "min_peers": 4,
        "window": 2,
    }
    assert data["max_unknown"] == 0.1 and data["allow_unknown"] is False
    again = tmp_path / "again.toml"
    again.write_text(result.stdout)
    assert load_policy(again).low == 0.3


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[tool.normscope]\nlwo = 0.3\n", "unknown key 'tool.normscope.lwo'"),
        ("[tool.normscope]\nlow = 'small'\n", "tool.normscope.low must be a number"),
        ("[tool.normscope]\nscope = 'role=nothing'\n", "unknown role 'nothing'"),
        ("[tool.normscope]\nexpect_init = 1\n", "expect_init must be true or false"),
        ("[tool.normscope.severity]\nband = 'fatal'\n", "must be one of error, warn, off"),
        ("[tool.normscope.roles.qk]\nlow = 3\nhigh = 2\n", "needs 0 < low < high"),
        ("[tool.normscope]\nlow = 2.0\n", "need 0 < low < high"),
        ("[tool.normscope\n", "invalid TOML"),
    ],
)
def test_bad_config_is_exit_2_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, needle: str
) -> None:
    (tmp_path / "pyproject.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    ckpt = _deepseek(tmp_path / "c")
    result = _check(str(ckpt))
    assert result.exit_code == 2
    assert needle in result.stderr
    assert result.stderr.count("Error:") == 1 and "Traceback" not in result.stderr


def test_cannot_check_is_exit_2(tmp_path: Path) -> None:
    def error_lines(*args: str) -> list[str]:
        result = _check(*args)
        assert result.exit_code == 2, result.stderr
        assert result.stdout == "" and "Traceback" not in result.stderr
        return [line for line in result.stderr.splitlines() if line.startswith("Error:")]

    missing = tmp_path / "missing"
    assert error_lines(str(missing)) == [f"Error: no such file or directory ({missing})"]
    assert error_lines() == [
        "Error: Invalid value for SOURCE: a checkpoint is required (or --show-config)"
    ]
    nope = tmp_path / "nope.toml"
    assert error_lines("--config", str(nope), "--show-config") == [
        f"Error: config file not found ({nope})"
    ]


# --- formats -------------------------------------------------------------------------------------


def test_json_junit_and_github(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = _deepseek(tmp_path / "c", final=0.27)
    data = json.loads(_check(str(ckpt), "-q", "-f", "json").stdout)
    assert list(data) == [
        "schema_version",
        "normscope_version",
        "source",
        "baseline",
        "policy",
        "findings",
        "errors",
        "warned",
        "verdict",
        "warnings",
    ]
    assert data["verdict"] == "fail" and data["errors"] == 1
    assert data["policy"]["scope"] == "final,mtp"
    assert set(data["findings"][0]) == {
        "check",
        "subject",
        "passed",
        "severity",
        "value",
        "limit",
        "message",
        "fix",
    }

    xml_path = tmp_path / "normscope.xml"
    result = _check(str(ckpt), "-q", "-f", "junit", "-o", str(xml_path))
    assert result.exit_code == 1 and result.stdout == ""
    root = ET.parse(xml_path).getroot()
    assert root.tag == "testsuites" and root.get("failures") == "1"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {
        f"normscope.{c}"
        for c in (
            "finite",
            "decodable",
            "band",
            "zero_channels",
            "offset",
            "identical",
            "mtp_declared",
            "norm_dtype",
        )
    }
    band = suites["normscope.band"]
    # final + the MTP depth's enorm, hnorm, shared_head.norm and its block's three norms
    assert band.get("tests") == "7" and band.get("failures") == "1"
    failed = [c for c in band.findall("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["model.norm.weight"]
    assert "below low 0.4" in failed[0].find("failure").get("message")

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    gh = _check(str(ckpt), "-q", "-f", "github")
    assert gh.exit_code == 1
    lines = gh.stdout.splitlines()
    assert lines[0].startswith("::error title=normscope band%3A model.norm.weight::final norm")
    assert lines[-1].startswith("::error title=normscope check::FAIL")
    assert "❌ normscope check: FAIL" in summary.read_text()
    assert "FAIL" in gh.stderr


def test_a_band_check_that_looks_at_nothing_exits_2(tmp_path: Path) -> None:
    bert = write_checkpoint(
        tmp_path / "bert",
        {
            "embeddings.LayerNorm.weight": np.ones(H, np.float32),
            "embeddings.LayerNorm.bias": np.zeros(H, np.float32),
        },
        {"model_type": "bert", "hidden_size": H, "num_hidden_layers": 0},
    )
    # An explicit scope that holds no norm: the band check looked at nothing, no pass.
    result = _check(str(bert), "--scope", "final")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines()[0] == (
        f"Error: no norm matches the scope 'final': the band check looked at nothing ({bert})"
    )
    assert _check(str(bert), "--scope", "all").exit_code == 0
    assert _check(str(bert), "--severity", "band=off").exit_code == 0
    # The default scope (final, MTP) of an architecture whose rules say it has no final norm,
    # and no MTP, holds nothing by construction (issue #24: every healthy released encoder
    # passes with the defaults): the report says so, the other checks judge the norms.
    default = _check(str(bert))
    assert default.exit_code == 0 and default.stdout.startswith("PASS")
    assert default.stderr.splitlines() == [
        "Warning: band: nothing to gate in the default scope 'final,mtp': the bert rules say "
        "this architecture has no final norm (post-LN: each LayerNorm normalises the residual "
        "stream) and it has no MTP; the other checks judged its 1 norms (--scope all gates "
        "every norm by the playbook band)"
    ]
    # ...but not when the config declares MTP the checkpoint lacks (the MTP norms are what the
    # default scope misses: named, exit 1). An architecture that has a final norm none of whose
    # names matched is refused (tests/test_verdict.py).
    write_checkpoint(
        tmp_path / "bert",
        {"embeddings.LayerNorm.weight": np.ones(H, np.float32)},
        {"model_type": "bert", "hidden_size": H, "num_nextn_predict_layers": 1},
    )
    declared = _check(str(bert))
    assert declared.exit_code == 1 and "nothing to gate" not in declared.stderr
    assert "the config declares 1, the checkpoint holds norms of 0" in declared.stdout


def test_a_norm_that_cannot_be_measured_fails_the_check(tmp_path: Path) -> None:
    # An I8 final norm is found but not decodable: the gate must not pass without it.
    tensors = llama_tensors(hidden=H)
    tensors["model.norm.weight"] = np.ones(H, np.int8)
    ckpt = write_checkpoint(tmp_path / "i8", tensors, llama_config(hidden=H))
    result = _check(str(ckpt), "-q")
    assert result.exit_code == 1
    assert "decodable: 1 violation(s)" in result.stdout
    assert "model.norm.weight: could not be measured: dtype I8" in result.stdout
    healthy = write_checkpoint(tmp_path / "ok", llama_tensors(hidden=H), llama_config(hidden=H))
    data = json.loads(_check(str(healthy), "-q", "-f", "json").stdout)
    decodable = [f for f in data["findings"] if f["check"] == "decodable"]
    assert [(f["subject"], f["passed"]) for f in decodable] == [("model", True)]


def test_group_scope_reaches_the_drift_checks(tmp_path: Path) -> None:
    base = _deepseek(tmp_path / "base")
    moved = _deepseek(tmp_path / "moved", layer0=0.5)
    # The layer-0 input norm (group input) moved 50%: a group scope must see it.
    result = _check(
        str(moved),
        "--baseline",
        str(base),
        "--max-drift",
        "0.1",
        "-q",
        "--scope",
        "group=input&layer>=0",
        "--severity",
        "band=off",
    )
    assert result.exit_code == 1
    assert "attn_input (layer 0) moved 50.0% since the baseline" in result.stdout


def test_unwritable_step_summary_keeps_the_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "missing" / "summary.md"))
    result = _check(str(_deepseek(tmp_path / "c", final=0.27)), "-q", "-f", "github")
    assert result.exit_code == 1
    assert "cannot append the job summary" in result.stderr
    assert "Traceback" not in result.stderr


def test_role_band_with_one_edge_inherits_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.normscope]\nhigh = 3.0\n[tool.normscope.roles.mtp_embedding]\nlow = 0.1\n"
    )
    monkeypatch.chdir(tmp_path)
    ckpt = _deepseek(tmp_path / "c", enorm=2.5)
    # enorm 2.5 is inside [0.1, 3.0]: the role table's missing `high` is the policy's 3.0.
    assert _check(str(ckpt), "-q").exit_code == 0
    assert _check(str(ckpt), "-q", "--high", "2.0").exit_code == 1


@pytest.mark.parametrize("parametrization", ["standard", "offset"])
def test_offset_check_fractions_are_those_of_every_channel(
    tmp_path: Path, parametrization: str
) -> None:
    """The offset check's fraction, against numpy over every gain concatenated: ties at 1.0,
    negatives, a NaN (a standard tower's `below 0`, an offset tower's `damped`)."""
    rng = np.random.default_rng(7)
    path = _deepseek(tmp_path / "c", nan_in="model.layers.1.input_layernorm.weight")
    tensors = {}
    for name in ("model.layers.0.input_layernorm.weight", "model.norm.weight"):
        values = rng.choice([1.0, 0.5, -0.25, 1.5, 0.0], H).astype(np.float32)
        tensors[name] = values
    shard = next(path.glob("*.safetensors"))
    stored = load_file(shard)
    save_file({**stored, **tensors}, shard)
    kind = Parametrization(parametrization)
    measured = measure(path, ScanOptions(parametrization=kind, cache=False))
    every = np.concatenate([measured.gains[n.name] for n in measured.report.norms])
    if kind is Parametrization.standard:
        expected = float((every < 0).mean())
    else:
        moved = every[every != 1.0]
        expected = float((moved < 1.0).mean())
    policy = Policy()
    (finding,) = [f for f in run_checks(measured, policy).findings if f.check is CheckName.offset]
    assert finding.value == expected and 0 < expected < 1
