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
        ["visual", "vision_tower", "vision_model", "vision_encoder", "vision", "image_encoder",
         "vision_backbone", "vit", "vision_embed_tokens", "image_tower", "visual_encoder",
         "vision_transformer", "siglip", "sam_model"],
        Tower.vision,
    ),
    **dict.fromkeys(
        ["audio_tower", "audio_encoder", "audio_model", "audio", "speech_encoder", "audio_embed",
         "whisper_encoder", "audio_transformer", "sound_tower", "acoustic_encoder"],
        Tower.audio,
    ),
    **dict.fromkeys(
        ["multi_modal_projector", "mm_projector", "merger", "visual_projection", "connector",
         "aligner", "resampler", "projector", "audio_projector", "vision_projector",
         "mm_projector_vision", "multi_modal_projector_audio", "embed_vision", "embed_audio",
         "deepstack_merger_list", "patch_merger", "vision_proj", "audio_proj", "mlp1"],
        Tower.projector,
    ),
}  # fmt: skip
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
