"""The floor: parse each shard header, pread only the 1-D *norm*.weight ranges, numpy statistics.

Nothing else: no validation, no architecture rules, no report. Prints one line per norm and, on
stderr, a JSON line {"bytes_read": ..., "reads": ...} counting every byte it read from the shards.
`floor_index.py` runs the same `scan` with one more check on each header.
"""

import glob
import json
import os
import sys
from collections.abc import Callable

import numpy as np

DECODE = {
    "BF16": lambda b: (np.frombuffer(b, "<u2").astype(np.uint32) << 16).view(np.float32),
    "F16": lambda b: np.frombuffer(b, "<f2"),
    "F32": lambda b: np.frombuffer(b, "<f4"),
}


def scan(path: str, on_header: Callable[[str, dict], None] | None = None) -> None:
    """Print the floor's lines for `path`; `on_header(shard, header)` sees each parsed header."""
    shards = (
        sorted(glob.glob(os.path.join(path, "*.safetensors"))) if os.path.isdir(path) else [path]
    )
    nbytes = reads = 0
    out = []
    for shard in shards:
        fd = os.open(shard, os.O_RDONLY)
        n = int.from_bytes(os.pread(fd, 8, 0), "little")
        header = json.loads(os.pread(fd, n, 8))
        nbytes += 8 + n
        reads += 2
        if on_header is not None:
            on_header(shard, header)
        for name, info in header.items():
            # a 1-D weight of a module whose name contains "norm" (q_a_layernorm, enorm,
            # shared_head.norm, pre_fc_norm_hidden, ...)
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
    sys.stdout.write("\n".join(out) + "\n")
    print(json.dumps({"bytes_read": nbytes, "reads": reads, "norms": len(out)}), file=sys.stderr)


if __name__ == "__main__":
    scan(sys.argv[1])
