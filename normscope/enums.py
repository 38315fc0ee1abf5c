"""Closed sets: the enums every other module speaks (values are the JSON/CSV strings).

Standard library only, and no other normscope import: the bottom floor of the house.
"""

from __future__ import annotations

from enum import Enum


class Closed(str, Enum):
    """A closed set whose members print as their value: `str(Band.collapse)`, `f"{band}"` and
    `"%s" % band` are `collapse`, as in JSON and CSV (a plain `str, Enum` prints
    `Band.collapse`); `repr` stays `<Band.collapse: 'collapse'>`."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Role(Closed):
    """What a norm does in the network (docs/architectures.md#conventions)."""

    attn_input = "attn_input"
    mlp_input = "mlp_input"
    attn_output = "attn_output"
    mlp_output = "mlp_output"
    qk = "qk"
    latent = "latent"
    linear_attn = "linear_attn"
    final = "final"
    mtp_embedding = "mtp_embedding"
    mtp_hidden = "mtp_hidden"
    mtp_final = "mtp_final"
    embedding = "embedding"
    cross_attn_input = "cross_attn_input"
    """Before a decoder block's cross-attention (pre-LN: Whisper `encoder_attn_layer_norm`, T5's
    `EncDecAttention` sublayer norm)."""
    cross_attn_output = "cross_attn_output"
    """After a decoder block's cross-attention joins the residual (post-LN: BART)."""
    attn_inner = "attn_inner"
    """A sub-LN inside the attention, before its output projection (Kosmos-2 `inner_attn_ln`,
    BitNet `attn_sub_norm`)."""
    mlp_inner = "mlp_inner"
    """A sub-LN inside the MLP, between its projections (Kosmos-2 `ffn_layernorm`, BitNet
    `ffn_sub_norm`)."""
    head = "head"
    """In an output head after the trunk (BERT's MLM `cls.predictions.transform.LayerNorm`,
    RoBERTa `lm_head.layer_norm`, SigLIP's pooling head)."""
    projector = "projector"
    """In the connector between a tower and the language model, not a block's (LLaVA-style
    `multi_modal_projector.norm`, Gemma-3 `mm_soft_emb_norm`)."""
    unknown = "unknown"


class Module(Closed):
    """Which part of the model a norm belongs to."""

    main = "main"
    mtp = "mtp"


class Tower(Closed):
    """Which tower of a multimodal model a norm is in (`text` for text-only models)."""

    text = "text"
    vision = "vision"
    audio = "audio"
    projector = "projector"
    """The connector between a tower and the language model (merger, multi-modal projector)."""


class Stack(Closed):
    """Which stack of an encoder-decoder a norm is in."""

    encoder = "encoder"
    decoder = "decoder"


class Group(Closed):
    """Input norms feed a linear map (foldable); output norms join the residual stream."""

    input = "input"
    output = "output"


class Kind(Closed):
    """`layernorm` when the checkpoint stores a bias next to the gain, else `rmsnorm`."""

    rmsnorm = "rmsnorm"
    layernorm = "layernorm"


class Parametrization(Closed):
    """How the stored vector w maps to the effective gain: `w` or `1 + w`."""

    standard = "standard"
    offset = "offset"

    @property
    def shift(self) -> float:
        """The constant added to the stored vector to get the effective gain."""
        return 1.0 if self is Parametrization.offset else 0.0


DEFAULT_LOW = 0.4
"""The playbook's act band [0.4, 1.8] x sqrt(d) (docs/architectures.md#the-ratio-and-its-bands):
below, collapse...
(here, beside `Band`, so that the command line's defaults need no schema import)"""
DEFAULT_HIGH = 1.8
"""...above, explosion."""
DEFAULT_SCOPE = "final,mtp"
"""The norms the gates look at unless told otherwise (the grammar is `normscope.scope`'s; here so
that the command line's help needs no scope or errors import)."""


class Band(Closed):
    """Health band of a norm's ratio ‖g_eff‖₂/√d (docs/architectures.md#the-ratio-and-its-bands)."""

    collapse = "collapse"
    shrink = "shrink"
    balanced = "balanced"
    grow = "grow"
    explosion = "explosion"
    nonfinite = "nonfinite"

    @property
    def out_of_band(self) -> bool:
        """True for the bands that leave the playbook's act band [low, high]."""
        return self in (Band.collapse, Band.explosion, Band.nonfinite)


class MatchedBy(Closed):
    """How a norm of checkpoint A was paired with one of checkpoint B."""

    name = "name"
    identity = "identity"
    """Same module, MTP depth, layer, role and dim under different names (e.g. Megatron vs HF)."""


class Severity(Closed):
    """What a failed check means: `error` fails the job, `warn` is reported only, `off` skips it."""

    error = "error"
    warn = "warn"
    off = "off"


class CheckName(Closed):
    """The checks of `normscope check`."""

    finite = "finite"
    """Every gain and bias is finite (always an error)."""
    decodable = "decodable"
    """Every norm found could be measured (not an unsupported dtype or empty; always an error)."""
    band = "band"
    """Ratio inside [low, high] (per-role overrides allowed), for norms in scope."""
    drift = "drift"
    """Relative change against --baseline at most --max-drift, for norms in scope."""
    band_change = "band_change"
    """Same band as in --baseline, for norms in scope."""
    init = "init"
    """Every effective gain exactly the identity and every bias exactly zero (--expect-init)."""
    mtp = "mtp"
    """The checkpoint holds the norms of --expect-mtp MTP depths."""
    anomaly = "anomaly"
    """No norm left its peers (the same norm in other layers; default severity: warn)."""
    zero_channels = "zero_channels"
    """No standard norm has exactly-zero channels (dead features after a merge or mask)."""
    offset = "offset"
    """The values fit the parametrization: offset not applied twice, not missing."""
    identical = "identical"
    """No two layers hold bit-identical trained norms (a copy bug)."""
    mtp_declared = "mtp_declared"
    """The checkpoint holds every MTP depth its config declares."""
    norm_dtype = "norm_dtype"
    """The norms are stored no narrower than the checkpoint's other floating tensors."""


class Order(Closed):
    """How `series` orders its checkpoints."""

    step = "step"
    """By the step number parsed from the name; natural order breaks ties."""
    natural = "natural"
    """By name, digits compared as numbers (checkpoint-10 after checkpoint-9)."""
    mtime = "mtime"
    """By modification time of the checkpoint file or folder."""
    given = "given"
    """As listed (checkpoints named one by one); the default for an explicit list."""


class StepSource(Closed):
    """Where the `step` of each checkpoint of a series comes from."""

    name = "name"
    """Parsed from the checkpoint's name (checkpoint-500, iter_0000500, step500, ...)."""
    position = "position"
    """The 0-based position in the series: some name carried no step number."""


class Executor(Closed):
    """How `series` runs its scans: `auto` picks `process` when the checkpoints are big enough;
    `dask` runs them on a Dask cluster (`normscope.executors`)."""

    auto = "auto"
    serial = "serial"
    thread = "thread"
    process = "process"
    dask = "dask"


class Verdict(Closed):
    """The outcome of `normscope check`."""

    passed = "pass"
    failed = "fail"


class FoldStatus(Closed):
    """What happened to one norm."""

    folded = "folded"
    """Consumers (or producers) read and reduced: the metrics are set."""
    not_applicable = "not_applicable"
    """QK norms: their output feeds no linear map."""
    no_consumer = "no_consumer"
    """No matrix found that reads (or writes) this norm; `reason` says what was looked for."""
    skipped = "skipped"
    """Matrices found but not decodable (bnb, MLX, GPTQ, FP4...); `reason` says which."""
    planned = "planned"
    """Dry run: the consumers are listed, nothing was read."""


class SourceKind(Closed):
    """What a source names, decided once when it is parsed (`sources.spec.parse_source`)."""

    folder = "folder"
    """A local folder of `.safetensors` shards (with or without an index)."""
    safetensors = "safetensors"
    """One local `.safetensors` file."""
    gguf = "gguf"
    """One local `.gguf` file (`sources/gguf.py` reads it where installed)."""
    torch = "torch"
    """One local PyTorch state dict (`.bin/.pt/.pth`), or a folder holding just one."""
    dcp = "dcp"
    """A PyTorch Distributed Checkpoint save (its folder, or its `.metadata` file)."""
    hub = "hub"
    """A Hugging Face Hub model repo and revision."""
    object_store = "object_store"
    """An object-store prefix or object (`s3://`, `gs://`, `az://`, `file://`)."""
    memory = "memory"
    """A state dict or module in this process (the Python API)."""
