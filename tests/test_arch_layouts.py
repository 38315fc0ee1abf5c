"""Issue #10: sparse checkpoints in the real naming of layouts no rule table covered, scanned end
to end with `normscope.scan`.

Every expectation is written from docs/architectures.md (its section next to each layout),
never read back from normscope. Bytes read are counted from our own parse of the headers: the
header of every shard plus the bytes of every norm gain and LayerNorm bias, exactly.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import load_make_fixtures

import normscope

mf = load_make_fixtures()
Entry = mf.SparseEntry
H, Q, KV, HEAD, V = 64, 32, 16, 8, 2048  # hidden, q_lora_rank, kv_lora_rank, head_dim, vocab

# name -> (module, mtp_depth, layer, role, parametrization, bias name or None)
Expected = dict[str, tuple[str, int | None, int | None, str, str, str | None]]


def _mat(name: str, *shape: int) -> Any:
    return Entry(name, "BF16", tuple(shape))


def _norm(
    out: list[Any], exp: Expected, name: str, width: int, fact: tuple[Any, ...], **kw: Any
) -> None:
    """A norm gain (identity at init: 1.0, or 0.0 stored for offset gains) and its facts."""
    offset = fact[4] == "offset"
    bias = kw.get("bias", False)
    out.append(Entry(f"{name}.weight", kw.get("dtype", "BF16"), (width,), 0.0 if offset else 1.0))
    if bias:
        out.append(Entry(f"{name}.bias", kw.get("dtype", "BF16"), (width,), 0.0))
    exp[f"{name}.weight"] = (*fact, f"{name}.bias" if bias else None)


def deepseek_original() -> tuple[list[Any], dict[str, Any], Expected]:
    """DeepSeek's own inference naming (docs/architectures.md#naming-vocabularies): no prefix,
    attn_norm / ffn_norm, MLA latent q_norm / kv_norm, final `norm`; the MTP module under
    `mtp.0.*` with enorm / hnorm / norm (trap 10) and a full block (attn_norm, ffn_norm, ...)."""
    out: list[Any] = [_mat("embed.weight", V, H)]
    exp: Expected = {}
    std = "standard"
    for i in range(3):
        p = f"layers.{i}."
        _norm(out, exp, f"{p}attn_norm", H, ("main", None, i, "attn_input", std))
        out.append(_mat(f"{p}attn.wq_a.weight", Q, H))
        _norm(out, exp, f"{p}attn.q_norm", Q, ("main", None, i, "latent", std))
        out.append(_mat(f"{p}attn.wq_b.weight", 4 * HEAD, Q))
        out.append(_mat(f"{p}attn.wkv_a.weight", KV + 4, H))
        _norm(out, exp, f"{p}attn.kv_norm", KV, ("main", None, i, "latent", std))
        out.append(_mat(f"{p}attn.wkv_b.weight", 8 * HEAD, KV))
        out.append(_mat(f"{p}attn.wo.weight", H, 4 * HEAD))
        _norm(out, exp, f"{p}ffn_norm", H, ("main", None, i, "mlp_input", std))
        out += [_mat(f"{p}ffn.{w}.weight", 4 * H, H) for w in ("w1", "w3")]
        out.append(_mat(f"{p}ffn.w2.weight", H, 4 * H))
    _norm(out, exp, "norm", H, ("main", None, None, "final", std))
    out.append(_mat("head.weight", V, H))
    m = "mtp.0."
    _norm(out, exp, f"{m}enorm", H, ("mtp", 1, None, "mtp_embedding", std))
    _norm(out, exp, f"{m}hnorm", H, ("mtp", 1, None, "mtp_hidden", std))
    out.append(_mat(f"{m}eh_proj.weight", H, 2 * H))
    _norm(out, exp, f"{m}attn_norm", H, ("mtp", 1, None, "attn_input", std))
    _norm(out, exp, f"{m}attn.q_norm", Q, ("mtp", 1, None, "latent", std))
    _norm(out, exp, f"{m}attn.kv_norm", KV, ("mtp", 1, None, "latent", std))
    _norm(out, exp, f"{m}ffn_norm", H, ("mtp", 1, None, "mlp_input", std))
    _norm(out, exp, f"{m}norm", H, ("mtp", 1, None, "mtp_final", std))
    config = {
        "model_type": "deepseek_v3",
        "hidden_size": H,
        "num_hidden_layers": 3,
        "num_nextn_predict_layers": 1,
        "q_lora_rank": Q,
        "kv_lora_rank": KV,
    }
    return out, config, exp


def zero_centred_vlm() -> tuple[list[Any], dict[str, Any], Expected]:
    """An unknown model_type whose text_config marks its RMSNorms zero-centred by a flag (trap 1,
    arriving through config), nested under the VLM prefix `model.language_model.` (trap 17), with
    a CLIP vision tower: LayerNorm with bias, standard (trap 2), no trunk layer."""
    out: list[Any] = [_mat("model.language_model.embed_tokens.weight", V, H)]
    exp: Expected = {}
    off = "offset"
    lm = "model.language_model."
    for i in range(2):
        p = f"{lm}layers.{i}."
        _norm(out, exp, f"{p}input_layernorm", H, ("main", None, i, "attn_input", off))
        out += [_mat(f"{p}self_attn.{x}_proj.weight", H, H) for x in "qkvo"]
        _norm(out, exp, f"{p}self_attn.q_norm", HEAD, ("main", None, i, "qk", off))
        _norm(out, exp, f"{p}self_attn.k_norm", HEAD, ("main", None, i, "qk", off))
        _norm(out, exp, f"{p}post_attention_layernorm", H, ("main", None, i, "mlp_input", off))
        out += [_mat(f"{p}mlp.{x}_proj.weight", 2 * H, H) for x in ("gate", "up")]
    _norm(out, exp, f"{lm}norm", H, ("main", None, None, "final", off))
    vt = "model.vision_tower.vision_model."

    # CLIPVisionTransformer: pre_layrnorm on the embeddings, layer_norm1/2 before attention and
    # MLP, post_layernorm where the stack ends (the block and stack vocabularies, #25).
    def vis(role: str) -> tuple[str, None, None, str, str]:
        return ("main", None, None, role, "standard")

    _norm(out, exp, f"{vt}pre_layrnorm", 32, vis("embedding"), bias=True, dtype="F32")
    for j in range(2):
        e = f"{vt}encoder.layers.{j}."
        _norm(out, exp, f"{e}layer_norm1", 32, vis("attn_input"), bias=True, dtype="F32")
        out.append(_mat(f"{e}self_attn.q_proj.weight", 32, 32))
        _norm(out, exp, f"{e}layer_norm2", 32, vis("mlp_input"), bias=True, dtype="F32")
    _norm(out, exp, f"{vt}post_layernorm", 32, vis("final"), bias=True, dtype="F32")
    config = {
        "model_type": "acme_vl",
        "architectures": ["AcmeVLForConditionalGeneration"],
        "text_config": {
            "model_type": "acme_text",
            "hidden_size": H,
            "num_hidden_layers": 2,
            "head_dim": HEAD,
            "num_attention_heads": 8,
            "use_gemma_norm": True,
        },
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 32},
    }
    return out, config, exp


def longcat(model_type: str) -> Callable[[], tuple[list[Any], dict[str, Any], Expected]]:
    """LongCat-Flash (docs/architectures.md#longcat-flash): two attention sublayers per layer,
    `input_layernorm.{0,1}`, `post_attention_layernorm.{0,1}`, `self_attn.{0,1}.q_a/kv_a_layernorm`
    (trap 18); MTP `model.mtp.layers.0.{enorm.m,hnorm.m}` (the extra `.m`), a block, and
    `model.mtp.norm`."""

    def build() -> tuple[list[Any], dict[str, Any], Expected]:
        out: list[Any] = [_mat("model.embed_tokens.weight", V, H)]
        exp: Expected = {}
        std = "standard"
        for i in range(2):
            p = f"model.layers.{i}."
            for s in (0, 1):
                _norm(out, exp, f"{p}input_layernorm.{s}", H, ("main", None, i, "attn_input", std))
                out.append(_mat(f"{p}self_attn.{s}.q_a_proj.weight", Q, H))
                _norm(
                    out, exp, f"{p}self_attn.{s}.q_a_layernorm", Q, ("main", None, i, "latent", std)
                )
                _norm(
                    out,
                    exp,
                    f"{p}self_attn.{s}.kv_a_layernorm",
                    KV,
                    ("main", None, i, "latent", std),
                )
                _norm(
                    out,
                    exp,
                    f"{p}post_attention_layernorm.{s}",
                    H,
                    ("main", None, i, "mlp_input", std),
                )
                out.append(_mat(f"{p}mlps.{s}.up_proj.weight", 2 * H, H))
        _norm(out, exp, "model.norm", H, ("main", None, None, "final", std))
        m = "model.mtp."
        _norm(out, exp, f"{m}layers.0.enorm.m", H, ("mtp", 1, None, "mtp_embedding", std))
        _norm(out, exp, f"{m}layers.0.hnorm.m", H, ("mtp", 1, None, "mtp_hidden", std))
        out.append(_mat(f"{m}layers.0.eh_proj.weight", H, 2 * H))
        _norm(out, exp, f"{m}layers.0.input_layernorm", H, ("mtp", 1, None, "attn_input", std))
        _norm(out, exp, f"{m}layers.0.self_attn.q_a_layernorm", Q, ("mtp", 1, None, "latent", std))
        _norm(
            out, exp, f"{m}layers.0.self_attn.kv_a_layernorm", KV, ("mtp", 1, None, "latent", std)
        )
        _norm(
            out, exp, f"{m}layers.0.post_attention_layernorm", H, ("mtp", 1, None, "mlp_input", std)
        )
        out.append(_mat(f"{m}layers.0.transformer_layer.mlp.up_proj.weight", 2 * H, H))
        _norm(out, exp, f"{m}norm", H, ("mtp", 1, None, "mtp_final", std))
        out.append(_mat(f"{m}embed_tokens.weight", V, H))
        config = {
            "model_type": model_type,
            "hidden_size": H,
            "num_layers": 2,
            "q_lora_rank": Q,
            "kv_lora_rank": KV,
        }
        return out, config, exp

    return build


def ernie(model_type: str) -> Callable[[], tuple[list[Any], dict[str, Any], Expected]]:
    """ERNIE-4.5 MTP (docs/architectures.md#ernie-45, vllm ernie_mtp.py): `model.mtp_emb_norm.0`,
    `model.mtp_hidden_norm.0`, `model.mtp_linear_proj.0`, `model.mtp_block.0.*` (a Llama layer);
    no MTP-specific final norm; standard RMSNorm; Llama-like trunk."""

    def build() -> tuple[list[Any], dict[str, Any], Expected]:
        out: list[Any] = [_mat("model.embed_tokens.weight", V, H)]
        exp: Expected = {}
        std = "standard"
        for i in range(2):
            p = f"model.layers.{i}."
            _norm(out, exp, f"{p}input_layernorm", H, ("main", None, i, "attn_input", std))
            out.append(_mat(f"{p}self_attn.q_proj.weight", H, H))
            _norm(out, exp, f"{p}post_attention_layernorm", H, ("main", None, i, "mlp_input", std))
            out.append(_mat(f"{p}mlp.up_proj.weight", 2 * H, H))
        _norm(out, exp, "model.norm", H, ("main", None, None, "final", std))
        _norm(out, exp, "model.mtp_emb_norm.0", H, ("mtp", 1, None, "mtp_embedding", std))
        _norm(out, exp, "model.mtp_hidden_norm.0", H, ("mtp", 1, None, "mtp_hidden", std))
        out.append(_mat("model.mtp_linear_proj.0.weight", H, 2 * H))
        b = "model.mtp_block.0."
        _norm(out, exp, f"{b}input_layernorm", H, ("mtp", 1, None, "attn_input", std))
        out.append(_mat(f"{b}self_attn.q_proj.weight", H, H))
        _norm(out, exp, f"{b}post_attention_layernorm", H, ("mtp", 1, None, "mlp_input", std))
        out.append(_mat("lm_head.weight", V, H))
        config = {
            "model_type": model_type,
            "hidden_size": H,
            "num_hidden_layers": 2,
            "num_nextn_predict_layers": 1,
        }
        return out, config, exp

    return build


LAYOUTS = {
    "deepseek-original": deepseek_original,
    "zero-centred-text-config-clip": zero_centred_vlm,
    "longcat": longcat("longcat_flash"),
    "longcat-naming-unknown-type": longcat("longcat_next"),
    "ernie": ernie("ernie4_5_moe"),
    "ernie-naming-unknown-type": ernie("ernie9"),
}


def _expected_bytes(shards: list[Path], wanted: set[str]) -> int:
    """Headers + the bytes of the wanted tensors, from our own parse of each header."""
    total = 0
    seen = set()
    for shard in shards:
        with open(shard, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        total += 8 + n
        for name, info in header.items():
            if name in wanted:
                begin, end = info["data_offsets"]
                total += end - begin
                seen.add(name)
    assert seen == wanted
    return total


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_scans_right(layout: str, tmp_path: Path) -> None:
    entries, config, expected = LAYOUTS[layout]()
    shards = mf.write_sparse_layout(tmp_path / layout, entries, config)
    r = normscope.scan(tmp_path / layout)
    got = {n.name: n for n in r.norms}
    assert sorted(got) == sorted(expected)
    for name, (module, depth, layer, role, param, bias) in expected.items():
        n = got[name]
        assert (n.module.value, n.mtp_depth, n.layer, n.role.value, n.parametrization.value) == (
            module,
            depth,
            layer,
            role,
            param,
        ), name
        assert n.identity, name  # every effective gain is 1: the parametrization is right
        assert (n.kind.value == "layernorm") == (bias is not None), name
    wanted = set(expected) | {b for *_, b in expected.values() if b}
    assert r.io.bytes_read == _expected_bytes(shards, wanted)
    has_mtp = any(v[0] == "mtp" for v in expected.values())
    assert r.model.mtp_depth == (1 if has_mtp else 0)
    # The MTP was named differently, not dropped: no false "re-save dropped it" warning.
    assert not any("advertises" in w for w in r.warnings), r.warnings
    assert not any("role 'unknown'" in w for w in r.warnings), r.warnings


def test_unknown_type_says_which_vocabulary_read_it(tmp_path: Path) -> None:
    # No table lists DeepSeek's own names: the vocabularies read them, and the warning says so.
    entries, config, expected = deepseek_original()
    config["model_type"] = "deepseek_v9"
    mf.write_sparse_layout(tmp_path / "d", entries, config)
    r = normscope.scan(tmp_path / "d")
    assert r.model.family == "generic"
    assert {n.name: n.role.value for n in r.norms} == {k: v[3] for k, v in expected.items()}
    assert any("naming vocabulary 'meta'" in w and "'mtp'" in w for w in r.warnings), r.warnings


def test_unknown_type_with_a_family_s_names_uses_that_family(tmp_path: Path) -> None:
    entries, config, _ = ernie("ernie9")()
    mf.write_sparse_layout(tmp_path / "e", entries, config)
    r = normscope.scan(tmp_path / "e")
    assert r.model.family == "ernie4_5"
    assert any("tensor names match the 'ernie4_5' rules" in w for w in r.warnings), r.warnings


def test_zero_centred_flag_is_reported(tmp_path: Path) -> None:
    entries, config, _ = zero_centred_vlm()
    mf.write_sparse_layout(tmp_path / "z", entries, config)
    r = normscope.scan(tmp_path / "z")
    assert any("text_config.use_gemma_norm = true" in w for w in r.warnings), r.warnings
