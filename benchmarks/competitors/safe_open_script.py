"""The script a user would write: safe_open every shard, get_tensor every 1-D *norm*.weight."""

import glob
import os
import sys

from safetensors import safe_open

path = sys.argv[1]
shards = sorted(glob.glob(os.path.join(path, "*.safetensors"))) if os.path.isdir(path) else [path]
for shard in shards:
    with safe_open(shard, framework="pt") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open is not a dict
            if "norm" in name and name.endswith(".weight"):
                g = f.get_tensor(name)
                if g.dim() != 1:
                    continue
                g = g.double()
                ratio = (g.norm() / g.numel() ** 0.5).item()
                print(
                    f"{name}\t{ratio:.4f}\t{g.mean():.4f}\t{g.std():.4f}\t{g.min():.4f}\t{g.max():.4f}"
                )
