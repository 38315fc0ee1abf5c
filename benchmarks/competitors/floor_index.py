"""The floor of an exact index check: `floor.py`, plus the shard index decoded (msgspec, the
fastest decoder installed) and every header name looked up in it, counted when it names the
header's own shard; the index must list exactly the headers' tensors. What normscope's
`_Agreement` proves, written as plainly as it can be (headers parsed by floor.py's own `scan`,
so the difference is the index check alone); without an index, `floor.py` itself.

Prints what floor.py prints; exits 1 when the index and the headers disagree.
"""

import operator
import os
import sys

import msgspec
from floor import scan

path = sys.argv[1]
index_path = os.path.join(path, "model.safetensors.index.json")
if not os.path.isfile(index_path):
    scan(path)
    sys.exit(0)
with open(index_path, "rb") as fh:
    weight_map = msgspec.json.decode(fh.read())["weight_map"]
seen = {"agreed": 0, "tensors": 0}


def check(shard: str, header: dict) -> None:
    header.pop("__metadata__", None)
    seen["agreed"] += operator.countOf(map(weight_map.get, header), os.path.basename(shard))
    seen["tensors"] += len(header)


scan(path, check)
if not (seen["agreed"] == seen["tensors"] == len(weight_map)):
    sys.exit(f"the index and the headers disagree ({seen} / {len(weight_map)})")
