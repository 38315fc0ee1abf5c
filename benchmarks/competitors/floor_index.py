"""The floor of an exact index check: `floor.py`, plus the shard index decoded (msgspec, the
fastest decoder installed) and every header name looked up in it, counted when it names the
header's own shard; the index must list exactly the headers' tensors. What normscope's
`_Agreement` proves, written as plainly as it can be (headers parsed as floor.py parses them, so
the difference is the index check alone); without an index, `floor.py` itself.

Prints what floor.py prints; exits 1 when the index and the headers disagree.
"""

import glob
import json
import operator
import os
import sys

import msgspec
import numpy as np

DECODE = {
    "BF16": lambda b: (np.frombuffer(b, "<u2").astype(np.uint32) << 16).view(np.float32),
    "F16": lambda b: np.frombuffer(b, "<f2"),
    "F32": lambda b: np.frombuffer(b, "<f4"),
}

path = sys.argv[1]
shards = sorted(glob.glob(os.path.join(path, "*.safetensors"))) if os.path.isdir(path) else [path]
index_path = os.path.join(path, "model.safetensors.index.json")
weight_map = None
if os.path.isfile(index_path):
    with open(index_path, "rb") as fh:
        weight_map = msgspec.json.decode(fh.read())["weight_map"]
nbytes = reads = agreed = tensors = 0
out = []
for shard in shards:
    fd = os.open(shard, os.O_RDONLY)
    n = int.from_bytes(os.pread(fd, 8, 0), "little")
    header = json.loads(os.pread(fd, n, 8))  # as floor.py: only the index check differs
    header.pop("__metadata__", None)
    nbytes += 8 + n
    reads += 2
    if weight_map is not None:
        here = os.path.basename(shard)
        agreed += operator.countOf(map(weight_map.get, header), here)
        tensors += len(header)
    for name, info in header.items():
        if (
            name.endswith(".weight")
            and "norm" in name.rsplit(".", 2)[-2]
            and len(info["shape"]) == 1
        ):
            begin, end = info["data_offsets"]
            raw = os.pread(fd, end - begin, 8 + n + begin)
            nbytes += len(raw)
            reads += 1
            g = DECODE[info["dtype"]](raw).astype(np.float64)
            out.append(
                f"{name}\t{np.sqrt(np.mean(g * g)):.4f}\t{g.mean():.4f}\t{g.std():.4f}"
                f"\t{g.min():.4f}\t{g.max():.4f}"
            )
    os.close(fd)
if weight_map is not None and not (agreed == tensors == len(weight_map)):
    sys.exit(f"the index and the headers disagree ({agreed} / {tensors} / {len(weight_map)})")
sys.stdout.write("\n".join(out) + "\n")
print(json.dumps({"bytes_read": nbytes, "reads": reads, "norms": len(out)}), file=sys.stderr)
