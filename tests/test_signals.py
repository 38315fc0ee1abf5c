"""Issue 28, item 6: SIGTERM is handled as SIGINT is — the cache's temporary file is removed and
the command exits 143 with one line — tested deterministically: the signal is delivered by the
process to itself at the very write of the temporary file, in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO_ROOT, llama_config, llama_tensors, write_checkpoint

# Runs `normscope scan CKPT` with the file handle of the cache's temporary file patched so that
# its first write sends SIGNAL to the process itself, before writing.
SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from normscope.sources import headercache, store

    headercache.RACY_SECONDS = 0.0  # the checkpoint was just written: cache it anyway
    SIGNAL = getattr(signal, sys.argv[2])
    AT = sys.argv[3]  # "create": right after the temporary file exists; "write": at its write
    real = os.fdopen
    real_open = os.open

    def trap_open(path, flags, *args):
        fd = real_open(path, flags, *args)
        if AT == "create" and str(path).endswith(".tmp"):
            os.kill(os.getpid(), SIGNAL)
        return fd

    class Handle:
        def __init__(self, handle):
            self.handle = handle
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.handle.close()
        def write(self, data):
            if AT == "write":
                os.kill(os.getpid(), SIGNAL)
            return self.handle.write(data)

    store.os = type(os)("os_with_a_trap")
    store.os.__dict__.update(os.__dict__)
    store.os.fdopen = lambda fd, *a, **k: Handle(real(fd, *a, **k))
    store.os.open = trap_open
    from normscope.cli import main
    sys.argv = ["normscope", "scan", sys.argv[1]]
    main()
    """
)


@pytest.mark.parametrize("at", ["create", "write"])
@pytest.mark.parametrize(("signal_name", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_at_the_cache_write_leaves_no_temporary_file(
    tmp_path: Path, signal_name: str, code: int, at: str
) -> None:
    """`create`: the moment mkstemp's window was (the file exists, its name was not yet
    returned): the name is now chosen before the file is made, so the cleanup knows it."""
    ckpt = write_checkpoint(tmp_path / "ckpt", llama_tensors(), llama_config())
    cache = tmp_path / "cache"
    env = {**os.environ, "NORMSCOPE_CACHE": str(cache), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("NORMSCOPE_NO_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ckpt), signal_name, at],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert (cache / "layouts").is_dir()  # the write had begun
    left = [p for p in cache.rglob("*") if p.is_file()]
    assert left == [], left
