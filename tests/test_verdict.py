"""A verdict users can trust (issue #11), end to end: peer anomalies in scan, diff, series and
check; role-aware alarms; advice that fits the model; `check` failing closed.

Expected values come from the constructions (a planted deviation, equal peers), not from
normscope's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import llama_config, llama_tensors, write_checkpoint
from typer.testing import CliRunner

import normscope
from normscope.cli import app
from normscope.scanner import ScanOptions

runner = CliRunner()
H = 16
LAYERS = 8


def _llama(
    root: Path, mlp: dict[int, float] | None = None, attn: float = 0.3, **kw: object
) -> Path:
    """8 layers, pre-MLP norms at 0.8 (or as `mlp` says per layer), input norms at `attn`."""
    norms = {}
    for i in range(LAYERS):
        norms[f"model.layers.{i}.input_layernorm.weight"] = np.full(H, attn, np.float32)
        value = (mlp or {}).get(i, 0.8)
        norms[f"model.layers.{i}.post_attention_layernorm.weight"] = np.full(H, value, np.float32)
    tensors = llama_tensors(layers=LAYERS, hidden=H, norms=norms, **kw)  # type: ignore[arg-type]
    return write_checkpoint(root, tensors, llama_config(layers=LAYERS, hidden=H))


def _anomalies(report: normscope.Report) -> dict[str, tuple[float | None, bool | None]]:
    return {n.name: (n.peer_median, n.anomaly) for n in report.norms if n.anomaly}


@pytest.mark.parametrize("planted", [0.1, 3.0])
def test_a_single_deviating_layer_is_the_one_anomaly(tmp_path: Path, planted: float) -> None:
    report = normscope.scan(_llama(tmp_path / "m", {3: planted}))
    name = "model.layers.3.post_attention_layernorm.weight"
    # Every other pre-MLP norm sits at 0.8: the leave-one-out peer median is 0.8 exactly.
    assert _anomalies(report) == {name: (pytest.approx(0.8), True)}
    assert report.summary.anomalies == 1
    others = [n for n in report.norms if n.role.value == "mlp_input" and n.name != name]
    assert all(n.anomaly is False and n.peer_median == pytest.approx(0.8) for n in others)
    # The final norm has no peers: no verdict rather than a guess.
    final = next(n for n in report.norms if n.role.value == "final")
    assert (final.peer_median, final.anomaly) == (None, None)


def test_equal_peers_and_a_uniform_shift_flag_nothing(tmp_path: Path) -> None:
    assert _anomalies(normscope.scan(_llama(tmp_path / "equal"))) == {}
    # Every pre-MLP norm at 0.1: far out of band, but together — a band matter, not an anomaly.
    shifted = normscope.scan(_llama(tmp_path / "shift", dict.fromkeys(range(LAYERS), 0.1)))
    assert _anomalies(shifted) == {} and shifted.summary.anomalies == 0


def test_roles_with_fewer_than_four_other_peers_get_no_verdict(tmp_path: Path) -> None:
    tensors = llama_tensors(layers=4, hidden=H)
    tensors["model.layers.2.input_layernorm.weight"] = np.full(H, 9.0, np.float32)
    report = normscope.scan(write_checkpoint(tmp_path / "m", tensors, llama_config(4, H)))
    assert {(n.peer_median, n.anomaly) for n in report.norms} == {(None, None)}


def test_the_anomaly_rule_is_a_policy_setting(tmp_path: Path) -> None:
    ckpt = _llama(tmp_path / "m", {3: 0.4})  # 2x below its peers: an anomaly by default
    assert len(_anomalies(normscope.scan(ckpt))) == 1
    # Among equal peers the robust test flags anything min_factor away: raise both edges.
    lenient_rule = normscope.PeerRule(factor=3.0, min_factor=2.5)
    assert _anomalies(normscope.scan(ckpt, ScanOptions(peers=lenient_rule))) == {}
    config = tmp_path / "policy.toml"
    config.write_text("[anomaly]\nfactor = 3.0\nmin_factor = 2.5\n")
    result = runner.invoke(app, ["check", str(ckpt), "--config", str(config), "-f", "json"])
    findings = json.loads(result.stdout)["findings"]
    assert not [f for f in findings if f["check"] == "anomaly" and not f["passed"]]
    config.write_text("[anomaly]\nfactr = 3.0\n")
    bad = runner.invoke(app, ["check", str(ckpt), "--config", str(config)])
    assert bad.exit_code == 2
    assert "unknown key 'anomaly.factr'" in bad.stderr


def test_scan_headline_and_anomalies_table(tmp_path: Path) -> None:
    ckpt = _llama(tmp_path / "m", {3: 0.1}, attn=0.2)
    result = runner.invoke(app, ["scan", str(ckpt)])
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    # The final norm (the gate scope) is healthy; 8 input norms in collapse are no alarm.
    assert "the 1 gated norm(s) are in band; 1 anomaly (a layer that left its peers)" in text
    assert "attn_input: 8 in collapse — typical of trained pre-norm models" in text
    assert "out-of-band norms" not in text
    table = text[text.index("anomalies (a norm that left its peers") :]
    row = next(line for line in table.splitlines() if "post_attention_layernorm" in line)
    assert row.split()[1:6] == ["3", "mlp_input", "0.100", "0.800", "÷8.0"]
    # --fail-on out-of-band gates the scope only: the collapsed trunk does not trip it.
    assert runner.invoke(app, ["scan", str(ckpt), "--fail-on", "out-of-band"]).exit_code == 0


def test_scan_of_a_healthy_model_says_healthy(tmp_path: Path) -> None:
    result = runner.invoke(app, ["scan", str(_llama(tmp_path / "m", attn=0.8))])
    assert "the 1 gated norm(s) are in band; no anomaly; healthy" in result.stdout


def test_check_warns_on_anomalies_and_fails_when_told(tmp_path: Path) -> None:
    ckpt = _llama(tmp_path / "m", {3: 0.1})
    warned = runner.invoke(app, ["check", str(ckpt)])
    assert warned.exit_code == 0, warned.stdout
    assert "anomaly: 1 violation(s)" in warned.stdout
    assert (
        "warn model.layers.3.post_attention_layernorm.weight: mlp_input (layer 3) ratio 0.100, "
        "peer median 0.800 (left its peers) [limit peers]" in warned.stdout
    )
    assert "8.0x below the median of its 7 peers in other layers" in warned.stdout
    assert "PASS, 1 warning(s)" in warned.stdout
    failed = runner.invoke(app, ["check", str(ckpt), "--severity", "anomaly=error"])
    assert failed.exit_code == 1
    assert "FAIL: 1 error(s)" in failed.stdout


def test_advice_for_a_model_without_mtp_never_mentions_mtp(tmp_path: Path) -> None:
    final = np.full(H, 0.2, np.float32)
    ckpt = _llama(tmp_path / "m", {3: 0.1}, final=final)
    result = runner.invoke(app, ["check", str(ckpt), "--scope", "all"])
    assert result.exit_code == 1
    assert "fix:" in result.stdout
    assert "MTP" not in result.stdout and "mtp" not in result.stdout
    # The final norm's advice names its kind (an input norm: weight decay does it no harm).
    assert "it is an input norm" in result.stdout


def test_check_refuses_an_architecture_it_could_not_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tensors = {
        f"trunk.cells.{i}.{leaf}.weight": rng.uniform(0.5, 1.5, H).astype(np.float32)
        for i in range(3)
        for leaf in ("mixnorm", "gatenorm")
    }
    tensors["trunk.cells.0.mixer.weight"] = rng.standard_normal((H, H)).astype(np.float32)
    ckpt = write_checkpoint(tmp_path / "odd", tensors, {"model_type": "zephyrine"})
    result = runner.invoke(app, ["check", str(ckpt)])
    assert result.exit_code == 2
    assert result.stdout == ""
    error, hint = result.stderr.strip().splitlines()
    assert error.startswith(
        "Error: normscope did not understand this checkpoint's architecture (zephyrine, "
        "rules: generic): no final norm was identified; 6 of 6 norms (100%, limit 10%) match "
        "no architecture rule: 'trunk.cells.0.gatenorm.weight'"
    )
    assert hint.startswith("Hint: teach normscope the names with --rules FILE.toml")
    allowed = runner.invoke(app, ["check", str(ckpt), "--allow-unknown", "--scope", "all"])
    assert allowed.exit_code == 0, allowed.stderr
    assert allowed.stdout.startswith("PASS")
    # Without a scope that holds a norm, the band check would look at nothing: not a pass.
    unjudged = runner.invoke(app, ["check", str(ckpt), "--allow-unknown"])
    assert unjudged.exit_code == 2
    assert "the band check looked at nothing" in unjudged.stderr


def test_check_accepts_an_encoder_without_a_final_norm(tmp_path: Path) -> None:
    tensors = {
        "embeddings.LayerNorm.weight": np.ones(H, np.float32),
        "embeddings.LayerNorm.bias": np.zeros(H, np.float32),
        "encoder.layer.0.attention.output.LayerNorm.weight": np.ones(H, np.float32),
        "encoder.layer.0.attention.output.LayerNorm.bias": np.zeros(H, np.float32),
    }
    ckpt = write_checkpoint(tmp_path / "bert", tensors, {"model_type": "bert"})
    # Understood (no refusal of the architecture), judged on the norms it has...
    assert runner.invoke(app, ["check", str(ckpt), "-q", "--scope", "all"]).exit_code == 0
    # ...and with the default scope (final, MTP), which holds none of them by construction (the
    # bert rules say it has no final norm; no MTP): a pass that says so, never a silent one.
    default = runner.invoke(app, ["check", str(ckpt)])
    assert default.exit_code == 0 and "band: nothing to gate" in default.stderr
    assert "did not understand" not in default.stderr
    # An explicit scope that holds nothing still exits 2.
    final = runner.invoke(app, ["check", str(ckpt), "-q", "--scope", "final"])
    assert final.exit_code == 2 and "the band check looked at nothing" in final.stderr


def test_diff_and_series_say_when_a_norm_left_its_peers(tmp_path: Path) -> None:
    before = _llama(tmp_path / "run" / "checkpoint-100")
    after = _llama(tmp_path / "run" / "checkpoint-200", {3: 0.1})
    result = runner.invoke(app, ["diff", str(before), str(after)])
    assert result.exit_code == 0, result.stderr
    assert (
        "became an anomaly in B: model.layers.3.post_attention_layernorm.weight (ratio 0.100, "
        "left its peers)" in result.stdout
    )
    data = json.loads(runner.invoke(app, ["diff", str(before), str(after), "-f", "json"]).stdout)
    moved = next(d for d in data["norms"] if d["layer"] == 3 and d["role"] == "mlp_input")
    assert (moved["anomaly_a"], moved["anomaly_b"]) == (False, True)
    series = runner.invoke(app, ["series", str(tmp_path / "run")])
    assert series.exit_code == 0, series.stderr
    assert (
        "model.layers.3.post_attention_layernorm.weight: 0.100 against a peer median of 0.800, "
        "an anomaly since step 200" in series.stdout
    )
