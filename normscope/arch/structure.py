"""The structure of a model read from its tensor names: towers, stacks and where stacks end.

- `tower_of`: which tower a norm is in — the last name component that names one (`visual`,
  `vision_tower`, `audio_tower`, `merger`, `multi_modal_projector`, ...), else `text`;
- `stack_of`: `encoder` or `decoder`, from a name component (`model.encoder.layers.3...`);
- `Stacks`: every stack of blocks (a block container with its layer index: `model.layers`,
  `vision_tower.encoder.layers`, `encoder.block`), and which of them ends in a final norm.

A stack's final norm is a norm outside every block whose parent module holds the stack (its
block container is at most two components below: `model.norm` for `model.layers`,
`vision_model.post_layernorm` for `vision_model.encoder.layers`) and whose last name component is
one of `FINAL_LEAVES` — the namings of the final norm in transformers' model code (cited below).
Whether a stack has one decides what the fairseq names inside its blocks mean: a pre-LN stack
(mBART, Whisper, M2M-100, XGLM, OPT) ends in a final norm, and its `self_attn_layer_norm` is an
attention INPUT norm; a post-LN stack (BART, Marian, BERT) has none, and the same name
normalises the residual after the attention (an output norm).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from normscope.enums import Stack, Tower

# The final norm's last name component in transformers' model code (5.25.0):
# `norm` (Llama, Mistral, ESM-C, Idefics2/3, Qwen2.5-Omni, π0, Dia), `final_layernorm` (Phi,
# Megatron), `final_norm`, `final_layer_norm` (GPT-NeoX, OPT, T5/mT5/LongT5, CLIP text, BLIP-2),
# `layer_norm` (BioGPT, Blenderbot, mBART, M2M-100, Pegasus, Kosmos-2, XGLM, SeamlessM4T,
# Whisper), `layernorm` (CTRL), `ln_f` (GPT-2), `norm_f` (Mamba, Mamba-2, Falcon-Mamba, MPT,
# Nemotron-H), `ln_out` (RWKV), `out_norm` (xLSTM), `output_layernorm` (CPM-Ant),
# `post_layernorm` (CLIP/SigLIP vision), `ln_post` (Whisper-style audio towers, OpenCLIP),
# `norm_out`, `post_norm`, `embedding_norm` (LFM2: Lfm2Model.forward applies it after the
# layers, despite its name), `ln` (Megatron-BERT `encoder.ln`), `rms_norm` (Ovis2 vision),
# `LayerNorm` (XLM-RoBERTa-XL `encoder.LayerNorm`, RoBERTa-PreLayerNorm),
# `emb_layer_norm_after` (EsmEncoder: after the layers, despite its name).
FINAL_LEAVES = (
    "embedding_norm",
    "emb_layer_norm_after",
    "ln",
    "rms_norm",
    "LayerNorm",
    "norm",
    "final_layernorm",
    "final_norm",
    "final_layer_norm",
    "layer_norm",
    "layernorm",
    "ln_f",
    "norm_f",
    "ln_out",
    "out_norm",
    "output_layernorm",
    "post_layernorm",
    "ln_post",
    "norm_out",
    "post_norm",
)

# Name components that open a tower (the last one in a name wins: `visual.merger` is the
# projector). Vision: Qwen2-VL `visual`, LLaVA `vision_tower`, BLIP `vision_model`, GIT
# `image_encoder`; audio: Qwen2-Audio/AudioFlamingo `audio_tower`, Qwen2.5-Omni `audio`;
# projector: LLaVA `multi_modal_projector`, Qwen2-VL `merger`, GIT `visual_projection`,
# Idefics3 `connector`, DeepSeek-VL `aligner`, MiniCPM-V `resampler`.
TOWER_WORDS: dict[str, Tower] = {
    **dict.fromkeys(
        [
            "visual",
            "vision_tower",
            "vision_model",
            "vision_encoder",
            "vision",
            "image_encoder",
            "vision_backbone",
            "vit",
            "vision_embed_tokens",
            "image_tower",
            "visual_encoder",
            "vision_transformer",
            "siglip",
            "sam_model",
        ],
        Tower.vision,
    ),
    **dict.fromkeys(
        [
            "audio_tower",
            "audio_encoder",
            "audio_model",
            "audio",
            "speech_encoder",
            "audio_embed",
            "whisper_encoder",
            "audio_transformer",
            "sound_tower",
            "acoustic_encoder",
        ],
        Tower.audio,
    ),
    **dict.fromkeys(
        [
            "multi_modal_projector",
            "mm_projector",
            "merger",
            "visual_projection",
            "connector",
            "aligner",
            "resampler",
            "projector",
            "audio_projector",
            "vision_projector",
            "mm_projector_vision",
            "multi_modal_projector_audio",
            "embed_vision",
            "embed_audio",
            "deepstack_merger_list",
            "patch_merger",
            "vision_proj",
            "audio_proj",
            "mlp1",
        ],
        Tower.projector,
    ),
}
_STACKS = {"encoder": Stack.encoder, "decoder": Stack.decoder}
# A vision tower's last norm in its projector: Qwen2VisionTransformerPretrainedModel runs its
# blocks, then `merger` = PatchMerger(ln_q, mlp); Qwen3-VL's merger has `norm`.
PROJECTOR_ENDS = (".merger.ln_q", ".merger.norm")
_POST_LN = "output.LayerNorm"


def tower_of(base: str) -> Tower:
    """The tower of a norm (`text` unless a component of its module path names another)."""
    tower = Tower.text
    for part in base.split(".")[:-1]:
        found = TOWER_WORDS.get(part)
        if found is not None:
            tower = found
    return tower


def stack_of(base: str) -> Stack | None:
    """`encoder` or `decoder` when a component of the module path is (or ends in) one."""
    for part in reversed(base.split(".")[:-1]):
        for word, stack in _STACKS.items():
            if part == word or part.endswith("_" + word) or part.startswith(word + "_"):
                return stack
    return None


@dataclass(frozen=True, slots=True)
class Stacks:
    """The stacks of blocks of one checkpoint, and which end in a final norm."""

    containers: frozenset[str]
    """Every block container, full name (`model.encoder.layers`)."""
    with_final: frozenset[str]
    """The containers whose stack ends in a final norm (`at_root` and a `FINAL_LEAVES` leaf)."""

    post_ln: frozenset[str] = frozenset()
    """Containers whose blocks normalise the residual after each sublayer by name (BertLayer's
    `attention.output.LayerNorm`, `output.LayerNorm`): post-LN stacks, which end in no final
    norm — a norm at their root is the embedding norm (BLIP-2's Q-Former `layernorm`)."""

    @classmethod
    def read(
        cls, containers: Iterable[str], outside: Iterable[str], inside: Iterable[str]
    ) -> Stacks:
        """From the block containers, the bases of the norms outside every block and of those
        inside one."""
        found = frozenset(containers)
        post = frozenset(
            c for c in found for b in inside if b.startswith(c + ".") and b.endswith(_POST_LN)
        )
        ends: set[str] = set()
        for base in outside:
            if base.endswith(PROJECTOR_ENDS):  # `visual.merger.ln_q` ends `visual.blocks`
                tower = base.rsplit(".", 2)[0] + ".x"
                ends.update(_below(found, tower, tower_of(tower)))
            elif base.rsplit(".", 1)[-1] in FINAL_LEAVES:
                ends.update(c for c in _below(found, base) if c not in post)
        return cls(found, frozenset(ends), post)

    def ends_here(self, base: str) -> bool:
        """True when a stack that is not post-LN ends at the parent of the norm `base`."""
        return any(c not in self.post_ln for c in _below(self.containers, base))

    def pre_ln(self, base: str) -> bool:
        """Whether the stack holding the norm `base` is pre-LN: it ends in a final norm, or it is
        a vision tower's (every vision encoder transformers 5.25.0 builds is pre-LN; one without
        a final norm of its own ends in its projector: InternViT, DaViT, RADIO, Qwen2-VL)."""
        return self.ends_in_final(base) or tower_of(base) is Tower.vision

    def ends_in_final(self, base: str) -> bool:
        """True when the innermost stack holding the norm `base` ends in a final norm."""
        holding = [c for c in self.containers if base.startswith(c + ".")]
        return bool(holding) and max(holding, key=len) in self.with_final

    def at_root(self, base: str) -> bool:
        """True when the norm's parent module holds a stack (a container at most 2 below)."""
        return bool(_below(self.containers, base))


def _below(containers: frozenset[str], base: str, tower: Tower | None = None) -> list[str]:
    """The containers at most two components below the parent of `base` (the top level when
    it has none) and in its tower (or `tower`): the stacks a norm outside every block can end."""
    parent = base.rsplit(".", 1)[0] if "." in base else ""
    tower = tower or tower_of(base)
    out = []
    for c in containers:
        if tower_of(c + ".x") is not tower:
            continue
        if parent:
            if not c.startswith(parent + "."):
                continue
            rest = c[len(parent) + 1 :]
        else:
            rest = c
        if rest.count(".") <= 1:
            out.append(c)
    return out


def _n(pattern: str, role: str | list[str], **kw: Any) -> dict[str, Any]:
    return {"pattern": pattern, "role": role, **kw}


# The generic vocabularies (`vocab.VOCABULARIES` lists them after every specific one), in the
# rules-file format.
# Names that say "before": input norms in any stack. Numbered names (`norm1`, `ln_1`) are pre-LN
# in CLIP/SigLIP/Qwen2-VL vision blocks but post-LN in Nomic-BERT/Jina-v3 (NomicBertBlock:
# norm1 after the attention's residual add) and OpenAI GPT-1: the stack's final norm decides.
# CLIP/SigLIP/SAM `layer_norm1/2` are pre-LN in every transformers tower.
_ATTN_IN = "(layer_norm1|layernorm_before|attention_norm|attn_norm|ln_attn)"
_MLP_IN = "(layer_norm2|layernorm_after|ffn_norm|mlp_norm|ln_mlp)"
_ATTN_NTH = "(ln_1|ln1|norm1)"
_MLP_NTH = "(ln_2|ln2|norm2)"
GENERIC_VOCABULARIES: list[dict[str, Any]] = [
    {
        "name": "stack",
        "source": "docs/architectures.md#stacks-towers-and-the-model-zoo; where a stack of "
        "blocks ends (normscope/arch/structure.py FINAL_LEAVES, with "
        "the transformers 5.25.0 models using each naming); embedding norms before the first "
        "block: BART/mBART `layernorm_embedding`, CLIP `pre_layrnorm`, Whisper-style `ln_pre`, "
        "Nomic-BERT/Jina `emb_ln`, BERT-style `embeddings.LayerNorm` in any tower",
        "norm": [
            _n("({ANY}.)?" + "(" + "|".join(FINAL_LEAVES) + ")", "final", at_stack_end=True),
            # The same names at the root of a post-LN stack, which has no final norm: the
            # embedding norm (Blip2QFormerModel applies `layernorm` to the query embeddings).
            _n("({ANY}.)?" + "(" + "|".join(FINAL_LEAVES) + ")", "embedding", at_stack_end=True),
            _n(
                "({ANY}.)?(layernorm_embedding|embed_layer_norm|emb_ln|ln_pre|pre_layrnorm|"
                "pre_layernorm|norm_pre|embed_norm|embedding_layernorm|layer_norm_embedding)",
                "embedding",
                at_stack_end=True,
            ),
            _n("({ANY}.)?embeddings.(LayerNorm|layer_norm|layernorm|norm|ln)", "embedding"),
            # Qwen2VisionTransformerPretrainedModel: blocks, then merger = PatchMerger(ln_q, mlp);
            # Qwen3-VL merger.norm: the vision tower's last norm sits in its projector.
            _n("({ANY}.)?merger.(ln_q|norm)", "final"),
        ],
    },
    {
        "name": "blocks",
        "source": "docs/architectures.md#stacks-towers-and-the-model-zoo; "
        "sublayer norms in any stack of blocks (text, vision, audio, encoder, decoder): "
        "transformers 5.25.0 CLIPEncoderLayer/SiglipEncoderLayer layer_norm1/2, ViTLayer "
        "layernorm_before/after, GPT2Block ln_1/ln_2/ln_cross_attn, Qwen2VLVisionBlock norm1/2, "
        "PixtralAttentionLayer attention_norm/ffn_norm, T5Block layer.N.layer_norm (by its "
        "SelfAttention/EncDecAttention/DenseReluDense sibling), BertLayer attention.output/"
        "output.LayerNorm; fairseq-style BartEncoderLayer/WhisperEncoderLayer "
        "self_attn_layer_norm, encoder_attn_layer_norm, final_layer_norm: input norms in a "
        "pre-LN stack (one that ends in a final norm: Whisper, mBART, M2M-100, XGLM, OPT), "
        "output norms in a post-LN one (BART, Marian, GTE attn_ln/mlp_ln); MambaBlock norm "
        "before its mixer",
        "norm": [
            _n("{ANY}.{L}." + _ATTN_IN, "attn_input"),
            _n("{ANY}.{L}." + _MLP_IN, "mlp_input"),
            _n("{ANY}.{L}." + _ATTN_NTH, "attn_input", if_final_norm=True),
            _n("{ANY}.{L}." + _ATTN_NTH, "attn_output", if_final_norm=False),
            _n("{ANY}.{L}." + _MLP_NTH, "mlp_input", if_final_norm=True),
            _n("{ANY}.{L}." + _MLP_NTH, "mlp_output", if_final_norm=False),
            _n(
                "{ANY}.{L}.post_attention_layernorm",
                "attn_output",
                if_present="post_feedforward_layernorm.weight",
            ),
            _n("{ANY}.{L}.(input_layernorm|pre_attention_layernorm)", "attn_input"),
            _n(
                "{ANY}.{L}.(post_attention_layernorm|pre_feedforward_layernorm|pre_mlp_layernorm)",
                "mlp_input",
            ),
            _n("{ANY}.{L}.(post_feedforward_layernorm|post_mlp_layernorm)", "mlp_output"),
            _n("{ANY}.{L}.({ANY}.)?(q_norm|k_norm|q_layernorm|k_layernorm|q_ln|k_ln)", "qk"),
            _n("{ANY}.{L}.layer.layer_norm", "attn_input", if_present="SelfAttention.q.weight"),
            _n(  # LongT5
                "{ANY}.{L}.layer.layer_norm",
                "attn_input",
                if_present="LocalSelfAttention.q.weight",
            ),
            _n(
                "{ANY}.{L}.layer.layer_norm",
                "attn_input",
                if_present="TransientGlobalSelfAttention.q.weight",
            ),
            _n(
                "{ANY}.{L}.layer.layer_norm",
                "cross_attn_input",
                if_present="EncDecAttention.q.weight",
            ),
            _n("{ANY}.{L}.layer.layer_norm", "mlp_input"),
            _n("{ANY}.{L}.(attention|attn).output.LayerNorm", "attn_output"),
            # Pre-LN BERTs: RobertaPreLayerNormLayer attention.LayerNorm/intermediate.LayerNorm,
            # XLMRobertaXLLayer attention.self_attn_layer_norm/LayerNorm, MegatronBertLayer
            # attention.ln/ln (each stack ends in a final norm).
            _n(
                "{ANY}.{L}.attention.(LayerNorm|ln|self_attn_layer_norm)",
                "attn_input",
                if_final_norm=True,
            ),
            _n("{ANY}.{L}.intermediate.LayerNorm", "mlp_input", if_final_norm=True),
            _n("{ANY}.{L}.(LayerNorm|ln)", "mlp_input", if_final_norm=True),
            _n("{ANY}.{L}.crossattention.output.LayerNorm", "cross_attn_output"),
            _n("{ANY}.{L}.output.LayerNorm", "mlp_output"),
            _n("{ANY}.{L}.(self_attn_layer_norm|attn_ln)", "attn_input", if_final_norm=True),
            _n("{ANY}.{L}.(self_attn_layer_norm|attn_ln)", "attn_output", if_final_norm=False),
            _n("{ANY}.{L}.final_layer_norm", "mlp_input", if_final_norm=True),
            _n("{ANY}.{L}.(final_layer_norm|mlp_ln)", "mlp_output", if_final_norm=False),
            _n(
                "{ANY}.{L}.(encoder_attn_layer_norm|ln_cross_attn)",
                "cross_attn_input",
                if_final_norm=True,
            ),
            _n("{ANY}.{L}.encoder_attn_layer_norm", "cross_attn_output", if_final_norm=False),
            _n("{ANY}.{L}.norm", "attn_input", if_present="mixer.in_proj.weight"),
            _n("{ANY}.{L}.mixer.norm", "linear_attn"),
        ],
    },
]
