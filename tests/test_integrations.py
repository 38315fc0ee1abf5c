"""The training callbacks (issue 27): a real transformers `Trainer` and a real Lightning
`Trainer` train a tiny Llama (built by transformers) on CPU with the normscope callback.

A run whose final norm is driven out of band (multiplied by 5 from step 6 on, by a callback that
runs before normscope's) stops at step 6 with the reports saved; a healthy run trains to its last
step; a scan that fails never stops training unless `on_error` says so. The logged numbers are
checked against the model's own weights (‖γ‖/√d computed here), the TensorBoard events read back
with tensorboard's reader."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from tensorboard.backend.event_processing import event_accumulator

from normscope.errors import SourceError, UsageError
from normscope.integrations.hf import NormscopeCallback, attach
from normscope.integrations.monitor import NormMonitor

HIDDEN, STEPS, BAD_STEP = 32, 10, 6
FINAL = "normscope/ratio/final/-/model.norm"


def tiny_llama() -> transformers.LlamaForCausalLM:
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


class Tokens(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, 64, (16,), generator=torch.Generator().manual_seed(i))
        return {"input_ids": ids, "labels": ids.clone()}


def final_ratio(model: Any) -> float:
    g = model.model.norm.weight.detach().double().numpy()
    return float(np.linalg.norm(g) / np.sqrt(g.size))


class Sabotage(transformers.TrainerCallback):
    """Drives the final norm out of band (x5) at BAD_STEP, as a diverging run would."""

    def on_step_end(
        self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any
    ) -> None:
        if state.global_step == BAD_STEP:
            with torch.no_grad():
                model.model.norm.weight.mul_(5.0)


def hf_trainer(tmp_path: Path, callbacks: list[Any], model: Any = None, **args: Any) -> Any:
    settings: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"), "max_steps": STEPS, "report_to": [],
        "per_device_train_batch_size": 4, "learning_rate": 1e-4, "logging_steps": 1,
        "save_steps": 4, "use_cpu": True, "disable_tqdm": True,
    }  # fmt: skip
    targs = transformers.TrainingArguments(**(settings | args))
    return transformers.Trainer(
        model=model or tiny_llama(), args=targs, train_dataset=Tokens(), callbacks=callbacks
    )


def events(folder: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0}
    )
    acc.Reload()
    return acc


def test_hf_a_healthy_run_trains_to_the_end(tmp_path: Path) -> None:
    callback = NormscopeCallback(2)
    trainer = hf_trainer(tmp_path, [callback])
    trainer.train()
    assert trainer.state.global_step == STEPS
    steps = [o.step for o in callback.monitor.history]
    assert steps == [2, 4, 6, 8, 10]  # every 2 steps; the saves at 4 and 8 scanned once
    assert not any(o.stop for o in callback.monitor.history)
    assert not (tmp_path / "out" / "normscope").exists()
    assert all(o.gammas == {} for o in callback.monitor.history)  # only the last keeps its gains
    assert callback.monitor.last is not None
    assert callback.monitor.last.gammas["normscope/gamma/final"].size == HIDDEN
    logged = [e for e in trainer.state.log_history if FINAL in e]
    assert [e["step"] for e in logged] == steps
    assert logged[-1][FINAL] == pytest.approx(final_ratio(trainer.model), rel=1e-6)
    acc = events(tmp_path / "out" / "runs" / "normscope")
    assert [e.step for e in acc.Scalars(FINAL)] == steps
    hist = acc.Histograms("normscope/gamma/final")[-1].histogram_value
    g = trainer.model.model.norm.weight.detach().double().numpy()
    assert hist.num == HIDDEN and hist.sum == pytest.approx(g.sum(), rel=1e-6)
    roles = set(acc.Tags()["histograms"])
    assert roles == {"normscope/gamma/attn_input", "normscope/gamma/mlp_input",
                     "normscope/gamma/final"}  # fmt: skip


GATE_FINAL = {"final_band": "error"}
"""The tiny llama has no MTP: its final norm out of band is a warning by default (issue #24);
the gate tests ask for it to be gated, as a training run watching its final norm would."""


def test_hf_the_gate_stops_the_run_at_the_bad_step(tmp_path: Path) -> None:
    callback = NormscopeCallback(1, severity=GATE_FINAL)
    trainer = hf_trainer(tmp_path, [Sabotage(), callback])
    trainer.train()
    assert trainer.state.global_step == BAD_STEP
    last = callback.monitor.history[-1]
    assert last.stop and last.step == BAD_STEP and last.check is not None
    assert last.check.verdict.value == "fail"
    assert last.scalars[FINAL] == pytest.approx(final_ratio(trainer.model), rel=1e-6)
    assert final_ratio(trainer.model) > 1.8  # out of the default band
    folder = tmp_path / "out" / "normscope"
    assert sorted(p.name for p in folder.iterdir()) == [
        f"normscope-step-{BAD_STEP}.check.json",
        f"normscope-step-{BAD_STEP}.scan.json",
    ]
    check = json.loads((folder / f"normscope-step-{BAD_STEP}.check.json").read_text())
    assert check["verdict"] == "fail"
    failed = [f for f in check["findings"] if not f["passed"]]
    assert any(f["subject"] == "model.norm.weight" for f in failed)
    scan = json.loads((folder / f"normscope-step-{BAD_STEP}.scan.json").read_text())
    final = next(n for n in scan["norms"] if n["name"] == "model.norm.weight")
    assert final["ratio"] == pytest.approx(final_ratio(trainer.model), rel=1e-6)


def test_hf_the_gate_off_only_logs(tmp_path: Path) -> None:
    callback = NormscopeCallback(1, gate=False, severity=GATE_FINAL)
    trainer = hf_trainer(tmp_path, [Sabotage(), callback])
    trainer.train()
    assert trainer.state.global_step == STEPS
    assert callback.monitor.history[BAD_STEP - 1].check.verdict.value == "fail"  # type: ignore[union-attr]


def test_hf_policy_from_the_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`[tool.normscope]` of the nearest pyproject.toml applies, as in CI: a band wide enough
    lets the x5 norm pass."""
    (tmp_path / "pyproject.toml").write_text("[tool.normscope]\nhigh = 10.0\n")
    monkeypatch.chdir(tmp_path)
    callback = NormscopeCallback(1)
    trainer = hf_trainer(tmp_path, [Sabotage(), callback])
    trainer.train()
    assert trainer.state.global_step == STEPS
    assert callback.monitor.policy.high == 10.0


def broken_model() -> Any:
    """A model whose state dict carries a value that is no tensor: every scan of it fails."""
    model = tiny_llama()

    def stray(module: Any, state: dict[str, Any], prefix: str, local: Any) -> None:
        state[prefix + "stray"] = "not a tensor"

    model.register_state_dict_post_hook(stray)
    return model


def test_hf_a_failed_scan_never_kills_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = NormscopeCallback(2)
    trainer = hf_trainer(tmp_path, [callback], model=broken_model(), save_strategy="no")
    with caplog.at_level(logging.WARNING, logger="normscope"):
        trainer.train()
    assert trainer.state.global_step == STEPS
    assert all("is a str, not a tensor" in (o.error or "") for o in callback.monitor.history)
    assert "cannot scan the model at step 2" in caplog.text and "training goes on" in caplog.text


def test_hf_a_failed_scan_stops_or_raises_when_asked(tmp_path: Path) -> None:
    callback = NormscopeCallback(3, on_error="stop")
    trainer = hf_trainer(tmp_path / "a", [callback], model=broken_model(), save_strategy="no")
    trainer.train()
    assert trainer.state.global_step == 3
    saved = json.loads(
        (tmp_path / "a" / "out" / "normscope" / "normscope-step-3.error.json").read_text()
    )
    assert "is a str, not a tensor" in saved["error"]
    trainer = hf_trainer(
        tmp_path / "b", [NormscopeCallback(3, on_error="raise")], model=broken_model(),
        save_strategy="no",
    )  # fmt: skip
    with pytest.raises(SourceError, match="is a str, not a tensor"):
        trainer.train()
    assert trainer.state.global_step == 3


def test_hf_through_the_trainers_loggers(tmp_path: Path) -> None:
    """Attached to the trainer, the scalars go through Trainer.log to report_to's TensorBoard."""
    trainer = hf_trainer(tmp_path, [], report_to=["tensorboard"])
    callback = attach(trainer, 5)
    trainer.train()
    runs = [p for p in (tmp_path / "out" / "runs").iterdir() if p.name != "normscope"]
    assert len(runs) == 1  # transformers' own TensorBoardCallback folder
    acc = events(runs[0])
    scanned = [4, 5, 8, 10]  # every 5 steps and at each save (every 4)
    assert [e.step for e in acc.Scalars("train/" + FINAL)] == scanned
    ours = events(tmp_path / "out" / "runs" / "normscope")
    assert FINAL not in ours.Tags()["scalars"]  # not twice in TensorBoard
    assert [h.step for h in ours.Histograms("normscope/gamma/final")] == scanned
    assert callback.monitor.history[-1].step == 10


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="every_n_steps"):
        NormMonitor(0)
    with pytest.raises(UsageError, match="warn, stop or raise"):
        NormMonitor(1, on_error="ignore")  # type: ignore[arg-type]


def test_the_light_scan_imports_no_framework(tmp_path: Path) -> None:
    code = (
        "import sys, normscope, normscope.integrations\n"
        "normscope.scan('fixtures/deepseek_v3-trained')\n"
        "heavy = {'torch', 'transformers', 'lightning', 'pytorch_lightning', 'accelerate'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"


# --- Lightning ------------------------------------------------------------------------------

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402

from normscope.integrations.lightning import NormscopeCallback as LightningCallback  # noqa: E402


class TinyLM(pl.LightningModule):
    def __init__(self, model: Any = None) -> None:
        super().__init__()
        self.model = model or tiny_llama()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.model(**batch).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-4)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(Tokens(), batch_size=4)


class LightningSabotage(pl.Callback):
    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        if trainer.global_step == BAD_STEP:
            with torch.no_grad():
                pl_module.model.model.norm.weight.mul_(5.0)


LFINAL = "normscope/ratio/final/-/model.model.norm"
LIGHTNING_ON_TORCH_2_13 = pytest.mark.filterwarnings(
    # lightning 2.6.6's own pytree use, deprecated by torch 2.13 (not normscope's)
    r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
)


def lightning_trainer(tmp_path: Path, callbacks: list[Any]) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=str(tmp_path), max_steps=STEPS, accelerator="cpu", devices=1,
        logger=[TensorBoardLogger(str(tmp_path), name="tb"), CSVLogger(str(tmp_path), name="csv")],
        callbacks=[*callbacks, ModelCheckpoint(str(tmp_path / "ckpt"), every_n_train_steps=4,
                                               save_top_k=-1)],
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
    )  # fmt: skip


@LIGHTNING_ON_TORCH_2_13
def test_lightning_a_healthy_run_trains_to_the_end(tmp_path: Path) -> None:
    callback = LightningCallback(3)
    trainer = lightning_trainer(tmp_path, [callback])
    module = TinyLM()
    trainer.fit(module)
    assert trainer.global_step == STEPS
    steps = [o.step for o in callback.monitor.history]
    assert steps == [3, 4, 6, 8, 9]  # every 3 steps and at each save (4, 8)
    assert not any(o.stop for o in callback.monitor.history)
    acc = events(tmp_path / "tb" / "version_0")
    logged = [(e.step, e.value) for e in acc.Scalars(LFINAL)]
    want = [(o.step, o.scalars[LFINAL]) for o in callback.monitor.history]
    assert [s for s, _ in logged] == steps
    assert [v for _, v in logged] == pytest.approx([v for _, v in want], rel=1e-6)
    assert [h.step for h in acc.Histograms("normscope/gamma/final")] == steps
    h = acc.Histograms("normscope/gamma/mlp_input")[0].histogram_value
    assert h.num == 2 * HIDDEN
    import csv

    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get(LFINAL)]
    assert [int(r["step"]) for r in rows] == steps


@LIGHTNING_ON_TORCH_2_13
def test_lightning_the_gate_stops_the_run_at_the_bad_step(tmp_path: Path) -> None:
    callback = LightningCallback(1, severity=GATE_FINAL)
    trainer = lightning_trainer(tmp_path, [LightningSabotage(), callback])
    module = TinyLM()
    trainer.fit(module)
    assert trainer.global_step == BAD_STEP
    last = callback.monitor.history[-1]
    assert last.stop and last.step == BAD_STEP
    assert last.scalars[LFINAL] == pytest.approx(final_ratio(module.model), rel=1e-6)
    check = json.loads(
        (tmp_path / "normscope" / f"normscope-step-{BAD_STEP}.check.json").read_text()
    )
    assert check["verdict"] == "fail"
    assert any(
        f["subject"] == "model.model.norm.weight" for f in check["findings"] if not f["passed"]
    )


@LIGHTNING_ON_TORCH_2_13
def test_lightning_a_failed_scan_never_kills_training(tmp_path: Path) -> None:
    callback = LightningCallback(2)
    trainer = lightning_trainer(tmp_path, [callback])
    trainer.checkpoint_callback.every_n_train_steps = 0  # a broken state dict cannot be saved
    trainer.fit(TinyLM(broken_model()))
    assert trainer.global_step == STEPS
    assert len(callback.monitor.history) == 5
    assert all("is a str, not a tensor" in (o.error or "") for o in callback.monitor.history)


@LIGHTNING_ON_TORCH_2_13
def test_the_readme_callback_example_builds_both_trainers(tmp_path: Path) -> None:
    from test_memory import readme_python

    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    scope: dict[str, Any] = {"model": tiny_llama(), "args": args, "ds": Tokens()}
    exec(compile(readme_python("NormscopeCallback(100)"), "README.md (callbacks)", "exec"), scope)
    handler = scope["trainer"].callback_handler
    assert any(isinstance(c, NormscopeCallback) for c in handler.callbacks)
    assert isinstance(scope["pl_trainer"], pl.Trainer)
    assert any(isinstance(c, LightningCallback) for c in scope["pl_trainer"].callbacks)


def test_the_gate_stops_even_when_its_reports_cannot_be_saved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monitor = NormMonitor(1, report_dir=blocker / "reports", severity=GATE_FINAL)
    model = tiny_llama()
    with torch.no_grad():
        model.model.norm.weight.mul_(5.0)
    with caplog.at_level(logging.WARNING, logger="normscope"):
        seen = monitor.observe(model, 7, tmp_path)
    assert seen.stop and seen.saved == () and seen.error is None
    assert "the reports could not be saved" in caplog.text


def test_an_unexpected_failure_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Odd:
        def state_dict(self) -> dict[str, Any]:
            raise RuntimeError("the model is being resharded")

    with caplog.at_level(logging.WARNING, logger="normscope"):
        seen = NormMonitor(1).observe(Odd(), 3, tmp_path)
    assert not seen.stop and seen.error == "RuntimeError: the model is being resharded"
    assert "training goes on" in caplog.text
    with pytest.raises(RuntimeError, match="resharded"):
        NormMonitor(1, on_error="raise").observe(Odd(), 3, tmp_path)
