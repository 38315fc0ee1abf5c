"""The Hub anchor: what a user writes with huggingface_hub alone to get the norms of a repo.

`HfApi.get_safetensors_metadata` (the index, then every shard's header, 8 threads), then, per
shard in THREADS threads (argv[2], default 8; 1 is the plain loop most scripts are), the 8-byte
header length and each 1-D *norm*.weight range with a ranged GET on `hf_hub_url` through
huggingface_hub's own session (as `parse_safetensors_file_metadata` reads headers;
`HfFileSystem.cat_file` would add a tree listing the fake Hub does not serve), numpy
statistics. Prints one line per norm and, on stderr, a JSON line {"norms": ...}.
"""

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from huggingface_hub import HfApi, get_session, hf_hub_url

DECODE = {
    "BF16": lambda b: (np.frombuffer(b, "<u2").astype(np.uint32) << 16).view(np.float32),
    "F16": lambda b: np.frombuffer(b, "<f2"),
    "F32": lambda b: np.frombuffer(b, "<f4"),
}

repo = sys.argv[1]
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
meta = HfApi().get_safetensors_metadata(repo)


def get(url: str, start: int, end: int) -> bytes:
    response = get_session().get(url, headers={"range": f"bytes={start}-{end - 1}"})
    response.raise_for_status()
    return response.content


def norms_of(shard: str) -> list[str]:
    url = hf_hub_url(repo, shard)
    n = int.from_bytes(get(url, 0, 8), "little")
    out = []
    for name, info in meta.files_metadata[shard].tensors.items():
        # a 1-D weight of a module whose name contains "norm" (as the floor script selects)
        if name.endswith(".weight") and "norm" in name.rsplit(".", 2)[-2] and len(info.shape) == 1:
            begin, end = info.data_offsets
            raw = get(url, 8 + n + begin, 8 + n + end)
            g = DECODE[info.dtype](raw).astype(np.float64)
            out.append(
                f"{name}\t{np.sqrt(np.mean(g * g)):.4f}\t{g.mean():.4f}\t{g.std():.4f}"
                f"\t{g.min():.4f}\t{g.max():.4f}"
            )
    return out


with ThreadPoolExecutor(THREADS) as pool:
    lines = [line for part in pool.map(norms_of, sorted(meta.files_metadata)) for line in part]
sys.stdout.write("\n".join(lines) + "\n")
print(json.dumps({"norms": len(lines)}), file=sys.stderr)
