"""Run `normscope ARGS...` in this process and record the kernel's read accounting of the run.

Cross-checks normscope's own byte counter: /proc/self/io `rchar` (bytes returned by read(2) and
pread(2), whatever the file) is sampled after the modules a scan imports are loaded and again
when the command ends, so the difference is what the command itself read: shard headers, norm
ranges, config.json and the shard index. Writes {"rchar": ..., "syscr": ...} to $IOPROBE_OUT.
"""

import json
import os
import sys


def io() -> dict:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(":") for line in f)}


# Pre-import what `scan` imports lazily, so reading their .pyc files is not counted.
import normscope.cli  # noqa: E402
import normscope.render.scan  # noqa: E402
import normscope.scanner  # noqa: E402

sys.argv = ["normscope", *sys.argv[1:]]
before = io()
code = 0
try:
    normscope.cli.main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
after = io()
with open(os.environ["IOPROBE_OUT"], "w") as f:
    json.dump({k: after[k] - before[k] for k in ("rchar", "syscr")} | {"exit": code}, f)
sys.exit(code)
