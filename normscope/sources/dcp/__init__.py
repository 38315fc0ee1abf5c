"""PyTorch Distributed Checkpoint (DCP) saves: Megatron-Core torch_dist, torchtitan, OLMo-core.

A DCP folder holds `.metadata` (a pickle: every tensor's global shape, dtype and chunks, and
where each chunk's bytes are) and `__<rank>_<i>.distcp` files of `torch.save` blobs. Megatron
saves it as `<save>/iter_0001000/` or `<save>/release/` (beside `metadata.json` and, before
mid-2026, `common.pt`), torchtitan as `checkpoint/step-<N>/`, OLMo-core as
`step<N>/model_and_optim/`. `open_dcp_checkpoint` reads the metadata with a restricted
unpickler (`unpickle.py`), presents the model tensors as a `Checkpoint` (`store.py`) and reads
nothing else until the norms are asked for: the optimizer state, the matrices and `common.pt`
are never read.

Megatron's `--apply-layernorm-1p` (`layernorm_zero_centered_gamma`) is not in the tensors. It is
read, in order, from `args` of the common state saved inside the `.distcp` files (mid-2026
Megatron-Core), from a run configuration beside the save (Megatron-Bridge `run_config.yaml`,
NeMo `model_config.yaml`), else left to `--parametrization`. When found it is put in the
checkpoint's config as `layernorm_zero_centered_gamma` (the key the architecture rules read as
the offset signal), and a warning and `DcpCheckpoint.parametrization_source` say where from.

Rooms: `opener.py` (where a save is, opening it, the zero-centred flag), `unpickle.py`,
`store.py`. This module only hands their names on.
"""

from __future__ import annotations

from normscope.sources.dcp.opener import (
    METADATA,
    TRACKER,
    find_dcp_dir,
    open_dcp_checkpoint,
    unfinished_dcp_dir,
    yaml_flag,
)
from normscope.sources.dcp.store import DcpCheckpoint

__all__ = [
    "METADATA",
    "TRACKER",
    "DcpCheckpoint",
    "find_dcp_dir",
    "open_dcp_checkpoint",
    "unfinished_dcp_dir",
    "yaml_flag",
]
