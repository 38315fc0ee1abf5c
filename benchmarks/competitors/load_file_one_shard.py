"""Full loading: safetensors.torch.load_file of one shard (the harness extrapolates by size)."""

import sys

from safetensors.torch import load_file

tensors = load_file(sys.argv[1])
print(len(tensors), sum(t.numel() * t.element_size() for t in tensors.values()))
