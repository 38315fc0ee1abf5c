"""Every HTML report, rendered for the browser tests (tests/test_html_reader.py) and the docs
screenshots (docs/screenshots.py), issue 26.

`render_all(folder)` writes each report's page through the command line, as a user would. The
series is a long training run: `n`
checkpoints of a tiny Qwen3-style model (per-head q_norm/k_norm) written by the safetensors
library, its final norm drifting towards collapse, and TensorBoard events with the main and MTP
losses written by the tensorboard package (`series --events` adds the stability trinity).

600 checkpoints 20 steps apart (steps 0 … 11,980) is the run issue 26 was reported on: the
trinity table listed every checkpoint and the x axis lost its last label.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
FIX = REPO_ROOT / "fixtures"

HIDDEN = 16
HEAD_DIM = 8
LAYERS = 2
STEP = 20

CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": HIDDEN,
    "head_dim": HEAD_DIM,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 32,
    "vocab_size": 8,
}


def final_gain(i: int, n: int) -> float:
    """The final norm's gain at checkpoint i of n: 1.0 falling to 0.45 (towards collapse)."""
    return 1.0 - 0.55 * i / max(n - 1, 1)


def main_loss(step: int) -> float:
    return 2.0 + 3.0 * math.exp(-step / 2500)


def mtp_loss(step: int) -> float:
    return main_loss(step) + 0.3 + step / 40_000


def tensors(i: int, n: int) -> dict[str, np.ndarray]:
    """The checkpoint's tensors: an embedding, the norms of each layer, the final norm."""
    rng = np.random.default_rng(i)
    t = i / max(n - 1, 1)
    out = {"model.embed_tokens.weight": rng.standard_normal((8, HIDDEN)).astype(np.float32)}
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}"
        noise = 0.02 * rng.standard_normal(HIDDEN)
        out[f"{prefix}.input_layernorm.weight"] = np.float32(0.8 + 0.1 * layer) + noise
        out[f"{prefix}.post_attention_layernorm.weight"] = np.float32(1.0 + 0.6 * t) + noise
        out[f"{prefix}.self_attn.q_norm.weight"] = np.full(HEAD_DIM, 1.0 + 1.2 * t, np.float32)
        out[f"{prefix}.self_attn.k_norm.weight"] = np.full(HEAD_DIM, 1.0 - 0.3 * t, np.float32)
    out["model.norm.weight"] = np.full(HIDDEN, final_gain(i, n), np.float32)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def write_run(root: Path, n: int = 600, events: bool = True) -> Path:
    """`root/checkpoint-<step>` for n checkpoints, and `root/tb` with the losses if `events`."""
    from safetensors.numpy import save_file

    for i in range(n):
        folder = root / f"checkpoint-{i * STEP}"
        folder.mkdir(parents=True)
        save_file(tensors(i, n), str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(CONFIG))
    if events:
        write_events(root / "tb", [i * STEP for i in range(n)])
    return root


def write_events(logdir: Path, steps: list[int]) -> None:
    """Megatron's tags (`lm loss`, `mtp_1 loss`) at every checkpoint's step."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(logdir))
    for step in steps:
        values = [
            summary_pb2.Summary.Value(tag="lm loss", simple_value=main_loss(step)),
            summary_pb2.Summary.Value(tag="mtp_1 loss", simple_value=mtp_loss(step)),
        ]
        summary = summary_pb2.Summary(value=values)
        writer.add_event(event_pb2.Event(step=step, wall_time=1.0 + step, summary=summary))
    writer.close()


def commands(folder: Path) -> dict[str, list[str]]:
    """Each report's command line (without `-f`), its paths relative to `folder`, which gets a
    `fixtures` link and the long run `run/` (the pages then name short, stable paths)."""
    if not (folder / "fixtures").exists():
        (folder / "fixtures").symlink_to(FIX, target_is_directory=True)
    if not (folder / "run").exists():
        write_run(folder / "run")
    return {
        "scan": ["scan", "fixtures/deepseek-v3-mtp"],
        "scan-qwen3": ["scan", "fixtures/qwen3-trained"],
        "diff": ["diff", "fixtures/deepseek_v3-init", "fixtures/deepseek_v3-trained"],
        "series": ["series", "run", "-j", "1", "--events", "run/tb"],
        "check": ["check", "fixtures/deepseek-v3-mtp"],
        "fold": ["fold", "fixtures/deepseek-v3-mtp"],
    }


def invoke_all(folder: Path, fmt: str) -> dict[str, Any]:
    """Run every report's command in `folder` with `-f fmt`: HTML into `<name>.html` (`-o`, as a
    user writes a report), JSON parsed from stdout."""
    from typer.testing import CliRunner

    from normscope.cli import app

    runner = CliRunner()
    out: dict[str, Any] = {}
    here = Path.cwd()
    os.chdir(folder)
    try:
        for name, args in commands(folder).items():
            extra = ["-o", f"{name}.html"] if fmt == "html" else []
            result = runner.invoke(app, [*args, "-f", fmt, *extra])
            if result.exit_code not in (0, 1):
                raise RuntimeError(f"{' '.join(args)}: exit {result.exit_code}: {result.stderr}")
            out[name] = folder / f"{name}.html" if fmt == "html" else json.loads(result.stdout)
    finally:
        os.chdir(here)
    return out


def render_all(folder: Path) -> dict[str, Path]:
    """Every report's page, `folder/<name>.html`, written by the command line."""
    pages: dict[str, Path] = invoke_all(folder, "html")
    return pages
