"""Files that are not safetensors, recognised by their magic bytes: what they are, what to do.

A `.gguf`, `.npz` or `.onnx` file (or a folder of them) gets an error naming its format and the
command that converts it to safetensors, instead of a complaint about an absurd header length.
PyTorch state dicts (`.bin`, `.pt`, `.pth`: a zip holding `data.pkl`, or a legacy pickle) are
recognised here and read by `torchfile`. Standard library only.
"""

from __future__ import annotations

from pathlib import Path

from normscope.errors import SourceError

DCP_METADATA = ".metadata"
"""The file a PyTorch DCP save writes last: its tensor list and layout."""

TORCH_SUFFIXES = (".bin", ".pt", ".pth")
OTHER_SUFFIXES = (".gguf", ".npz", ".onnx")
GGUF = "GGUF (llama.cpp)"
"""What `sniff` calls a GGUF file (a `SourceKind.gguf` source)."""

_CONVERT = {
    "GGUF (llama.cpp)": (
        'convert it with transformers (it dequantizes GGUF): python -c "from transformers '
        "import AutoModelForCausalLM as M; M.from_pretrained('DIR', gguf_file='FILE.gguf')"
        ".save_pretrained('OUT')\", then normscope scan OUT"
    ),
    "NumPy .npz": (
        'convert it: python -c "import numpy as np; from safetensors.numpy import save_file; '
        "save_file(dict(np.load('FILE.npz')), 'OUT.safetensors')\""
    ),
    "ONNX": (
        'export the initializers: python -c "import onnx; from onnx.numpy_helper import '
        "to_array; from safetensors.numpy import save_file; m = onnx.load('FILE.onnx'); "
        "save_file({t.name: to_array(t) for t in m.graph.initializer}, 'OUT.safetensors')\""
    ),
}


def sniff(path: Path) -> str | None:
    """`torch`, a format named in `_CONVERT`, or None (safetensors, or unknown: the layout says)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if head.startswith(b"GGUF"):
        return GGUF
    if head.startswith(b"PK\x03\x04"):
        import zipfile  # only for a zip: a torch save

        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (OSError, zipfile.BadZipFile):
            return None
        if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
            return "torch"
        if names and all(n.endswith(".npy") for n in names):
            return "NumPy .npz"
        return None
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # a legacy (pre-1.6) torch.save: a pickle stream
    if path.suffix.lower() == ".onnx" and head[:1] == b"\x08":  # protobuf field 1: ir_version
        return "ONNX"
    return None


def refuse(path: Path, kind: str) -> SourceError:
    """The error for a file normscope does not read, with the command that converts it."""
    return SourceError(
        f"{kind} file, not safetensors: normscope reads safetensors, PyTorch state dicts "
        f"and DCP saves ({path})",
        hint=_CONVERT[kind],
    )


def folder_hint(path: Path) -> str | None:
    """For a folder without safetensors: what it holds instead, and what to do."""
    found = {p.suffix.lower() for p in path.iterdir() if p.is_file()}
    torch_files = sorted(found & set(TORCH_SUFFIXES))
    others = sorted(found & set(OTHER_SUFFIXES))
    if torch_files:
        return (
            f"the folder holds several {'/'.join(torch_files)} files: scan one PyTorch state dict "
            "file at a time (normscope scan FOLDER/FILE.bin, needs normscope[torch]), or convert "
            "the model to safetensors (save_pretrained(..., safe_serialization=True))"
        )
    if ".gguf" in found:
        return "the folder holds several .gguf files: scan one GGUF file at a time"
    if others:
        return f"the folder holds {'/'.join(others)} files: scan one of them for how to convert it"
    return None


def single_gguf_file(path: Path) -> Path | None:
    """The one GGUF file of a folder without safetensors (None: none or several)."""
    return _the_one(path, (".gguf",), GGUF)


def single_torch_file(path: Path) -> Path | None:
    """The one `.bin`/`.pt`/`.pth` file of a folder without safetensors (None: none or several)."""
    return _the_one(path, TORCH_SUFFIXES, "torch")


def _the_one(path: Path, suffixes: tuple[str, ...], kind: str) -> Path | None:
    """The folder's only file with one of these suffixes, if its magic bytes say `kind`."""
    found = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
    return found[0] if len(found) == 1 and sniff(found[0]) == kind else None
