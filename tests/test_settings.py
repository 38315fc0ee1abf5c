"""One way in (issue 22): every command and its API twin build their options with the same
builder (`normscope.settings`) and read the same configuration, so the same inputs and config
give the same report; and `[tool.normscope]` is applied by every command, so a checkpoint cannot
pass `check` and fail `scan --fail-on out-of-band` under one configuration."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO_ROOT, write_checkpoint
from test_rules_cli import EXPECTED, RULES
from typer.testing import CliRunner

import normscope
from normscope.cli import app
from normscope.enums import Role
from normscope.errors import ConfigError, NormscopeError, UsageError
from normscope.render.common import render_json
from normscope.render.fold import render_fold_json
from normscope.render.series import render_series_json
from normscope.settings import Flags, build_settings

runner = CliRunner()
FIX = REPO_ROOT / "fixtures"

# Bands, a per-role band, the anomaly rule and the architecture rules, in one table. With the
# global band [0.5, 1.5] the final norm (ratio 2) is out of band; its role band lets it pass.
CONFIG = """
[tool.normscope]
low = 0.5
high = 1.5
scope = "final,mtp"

[tool.normscope.roles.final]
high = 3.0

[tool.normscope.anomaly]
factor = 3.0
""" + RULES.replace("[[family", "[[tool.normscope.rules.family")


def _checkpoint(root: Path, final: float = 2.0, scale: float = 1.0) -> Path:
    """The made-up `zephyrine` architecture (only the rules above can read it), final norm at
    `final`."""
    tensors = {
        name: np.full(16, (0.0 if "postmix" in name else 1.0) * scale, np.float32)
        for name in EXPECTED
    }
    tensors["out_norm.weight"] = np.full(16, final, np.float32)
    tensors["stack.0.mixer.in_proj.weight"] = np.ones((16, 16), np.float32)
    return write_checkpoint(root, tensors, {"model_type": "zephyrine"})


def _timeless(data: Any) -> Any:
    """A report's JSON without what two runs may disagree on: timings, and the bytes read (a
    second run may find the layout in the header cache)."""
    if isinstance(data, dict):
        return {k: _timeless(v) for k, v in data.items() if "seconds" not in k and k != "io"}
    if isinstance(data, list):
        return [_timeless(v) for v in data]
    return data


@pytest.fixture(params=["pyproject", "config"])
def project(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The configuration either as `[tool.normscope]` of the pyproject.toml in the current
    directory, or as a file given with `--config` / `config=` (the directory has none)."""
    here = tmp_path / "project"
    here.mkdir()
    monkeypatch.chdir(here)
    if request.param == "pyproject":
        (here / "pyproject.toml").write_text(CONFIG)
        return [], {}
    path = tmp_path / "normscope.toml"
    path.write_text(CONFIG)
    return ["--config", str(path)], {"config": path}


def _cli(args: list[str]) -> Any:
    result = runner.invoke(app, args)
    return result


def _same(cli_args: list[str], api: Callable[[], Any], render: Callable[[Any], str]) -> int:
    """Run the command (JSON) and its API twin; their reports must be equal. The exit code."""
    result = _cli([*cli_args, "-f", "json", "-q"])
    assert result.exit_code in (0, 1), result.stderr
    assert _timeless(json.loads(result.stdout)) == _timeless(json.loads(render(api())))
    return int(result.exit_code)


def test_every_command_and_its_api_twin_give_the_same_report(tmp_path: Path, project: Any) -> None:
    flags, keywords = project
    a = _checkpoint(tmp_path / "run" / "checkpoint-100")
    b = _checkpoint(tmp_path / "run" / "checkpoint-200", scale=0.97)

    _same(["scan", str(a), *flags], lambda: normscope.scan(a, **keywords), render_json)
    report = normscope.scan(a, **keywords)
    assert {n.name: n.role.value for n in report.norms} == {k: v[3] for k, v in EXPECTED.items()}
    assert report.summary.thresholds.high == 1.5  # the config's band, not the default 1.8
    final = next(n for n in report.norms if n.role.value == "final")
    assert final.ratio == pytest.approx(2.0) and not final.band.out_of_band  # its role band

    _same(["diff", str(a), str(b), *flags], lambda: normscope.diff(a, b, **keywords), render_json)
    _same(
        ["series", str(tmp_path / "run"), "-j", "1", *flags],
        lambda: normscope.series(tmp_path / "run", jobs=1, **keywords),
        render_series_json,
    )
    code = _same(
        ["check", str(b), "--baseline", str(a), "--max-drift", "0.5", *flags],
        lambda: normscope.check(b, baseline=a, max_drift=0.5, **keywords),
        render_json,
    )
    verdict = normscope.check(b, baseline=a, max_drift=0.5, **keywords).verdict
    assert (code, verdict.value) == (0, "pass")
    code = _same(
        ["check", str(b), "--baseline", str(a), "--max-drift", "0.01", *flags],
        lambda: normscope.check(b, baseline=a, max_drift=0.01, **keywords),
        render_json,
    )
    verdict = normscope.check(b, baseline=a, max_drift=0.01, **keywords).verdict
    assert (code, verdict.value) == (1, "fail")  # 3 % drift: exit 1 and a failed verdict


def test_fold_and_its_api_twin_give_the_same_report(tmp_path: Path, project: Any) -> None:
    flags, keywords = project
    ckpt = FIX / "llama-trained"
    _same(
        ["fold", str(ckpt), "--device", "cpu", "--scope", "all", *flags],
        lambda: normscope.fold(ckpt, device="cpu", scope="all", **keywords),
        render_fold_json,
    )
    folded = normscope.fold(ckpt, device="cpu", scope="all", **keywords)
    assert folded.summary.thresholds.low == 0.5


def test_a_refusal_is_exit_2_and_the_same_error(tmp_path: Path, project: Any) -> None:
    flags, keywords = project
    ckpt = _checkpoint(tmp_path / "ckpt")
    bad = tmp_path / "bad.toml"
    bad.write_text("[tool.normscope]\nlwo = 1\n")
    cases: list[tuple[list[str], Callable[[], Any]]] = [
        (["check", str(ckpt), "--low", "2"], lambda: normscope.check(ckpt, low=2.0, **keywords)),
        (["scan", str(ckpt), "--config", str(bad)], lambda: normscope.scan(ckpt, config=bad)),
        (
            ["check", str(ckpt), "--scope", "module=vision"],
            lambda: normscope.check(ckpt, scope="module=vision", **keywords),
        ),
    ]
    for args, api in cases:
        result = _cli([*args, *flags] if "--config" not in args else args)
        assert result.exit_code == 2 and result.stdout == "", (args, result.stdout)
        with pytest.raises(NormscopeError) as raised:
            api()
        assert raised.value.message in result.stderr, (raised.value.message, result.stderr)


@pytest.mark.parametrize("final", [0.2, 0.45, 1.0, 1.7, 2.9, 3.5])
@pytest.mark.parametrize(
    "config",
    [
        "[tool.normscope]\nhigh = 1.5\n[tool.normscope.roles.final]\nhigh = 3.0\n",
        "[tool.normscope]\nlow = 0.5\n",
        "[tool.normscope]\nlow = 0.1\nhigh = 1.6\nscope = 'all'\n",
        "[tool.normscope.roles.final]\nlow = 0.4\nhigh = 1.2\n",
    ],
)
def test_check_and_scan_fail_on_agree_under_one_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, final: float, config: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        config + RULES.replace("[[family", "[[tool.normscope.rules.family")
    )
    ckpt = _checkpoint(tmp_path / "ckpt", final=final)
    check = _cli(["check", str(ckpt), "-q"])
    scan = _cli(["scan", str(ckpt), "--fail-on", "out-of-band", "-f", "json", "-q"])
    assert check.exit_code in (0, 1) and scan.exit_code in (0, 1), (check.stderr, scan.stderr)
    # The band is the only check this checkpoint can fail: both verdicts are the same.
    assert check.exit_code == scan.exit_code, (final, config, check.stdout, scan.stderr)
    band = json.loads(scan.stdout)["norms"]
    out_of_band = any(n["role"] == "final" and n["band"] in ("collapse", "explosion") for n in band)
    assert scan.exit_code == int(out_of_band)


def test_show_config_is_the_merged_configuration_for_every_command(
    tmp_path: Path, project: Any
) -> None:
    flags, _ = project
    ckpt = str(_checkpoint(tmp_path / "ckpt"))
    shown = {}
    for command in (
        ["scan", ckpt],
        ["diff", ckpt, ckpt],
        ["series", ckpt],
        ["check"],
        ["fold", ckpt],
    ):
        result = _cli([*command, *flags, "--low", "0.6", "--show-config"])
        assert result.exit_code == 0, (command, result.stderr)
        shown[command[0]] = result.stdout
    assert len(set(shown.values())) == 1, shown
    text = shown["scan"]
    assert "low = 0.6\n" in text and "high = 1.5\n" in text  # the flag over the config
    assert "[tool.normscope.roles.final]\nhigh = 3.0\n" in text
    assert "factor = 3.0\n" in text
    assert "# architecture rules from: " in text
    assert "< flags)" in text.splitlines()[0]


def test_flags_override_the_config_and_bad_flags_are_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(CONFIG)
    settings = build_settings(Flags(high=2.5))
    assert (settings.scan.thresholds.low, settings.scan.thresholds.high) == (0.5, 2.5)
    assert settings.scan.rules.families and settings.scan.peers.factor == 3.0
    assert settings.scan.band_of(Role.final).high == 3.0
    with pytest.raises(UsageError, match="need 0 < --low < --high"):
        build_settings(Flags(low=1.6))  # above the config's high
    with pytest.raises(UsageError, match="need 0 < --low < --high"):
        build_settings(Flags(low=float("nan")))
    with pytest.raises(UsageError):
        build_settings(Flags(max_drift=-1.0))
    with pytest.raises(UsageError):
        build_settings(Flags(parametrization="sideways"))
    with pytest.raises(ConfigError, match="config file not found"):
        build_settings(Flags(config=tmp_path / "nope.toml"))
    # The options object travels to worker processes: it pickles, side channels included.
    quiet = build_settings(Flags(no_cache=True, verbose=True), environ={})
    again = pickle.loads(pickle.dumps(quiet.scan))
    assert again == quiet.scan and (again.cache, again.verbose) == (False, True)
    assert build_settings(environ={"NORMSCOPE_NO_CACHE": "1"}).scan.cache is False
    assert build_settings(environ={"NORMSCOPE_VERBOSE": "yes"}).scan.verbose is True
    assert build_settings(environ={}).scan.cache is True


def test_a_series_judges_role_bands_in_its_rows_and_its_trends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The final norm at 2.0: out of the global band [0.5, 1.5], inside its role band (<= 3.0).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(CONFIG)
    for step, final in ((100, 1.9), (200, 2.0)):
        _checkpoint(tmp_path / "run" / f"checkpoint-{step}", final=final)
    report = normscope.series(tmp_path / "run", jobs=1)
    assert report.summary.roles == build_settings().policy.roles
    (trend,) = [t for t in report.summary.headline if t.name == "out_norm.weight"]
    rows = [r.norm for r in report.rows if r.norm.name == "out_norm.weight"]
    assert trend.band_last is rows[-1].band and not trend.band_last.out_of_band
    assert trend.projected_crossing_step is None or trend.projected_band is not None
    data = json.loads(render_series_json(report))
    assert data["summary"]["roles"] == [{"role": "final", "low": None, "high": 3.0}]
    gate = _cli(["series", str(tmp_path / "run"), "--fail-on", "out-of-band", "-q"])
    assert gate.exit_code == 0, gate.stderr
