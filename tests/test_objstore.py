"""Object-store sources against the loopback S3 server (tests/s3server.py): the same reports as
the local copy, the bytes read and the requests counted, the header cache keyed by ETag, and one
clear line (exit 2) for each failure.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import llama_config, llama_tensors, write_checkpoint
from s3server import S3, auth_enforced
from typer.testing import CliRunner, Result

from normscope.cli import app
from normscope.scanner import measure
from normscope.sources import open_checkpoint

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
runner = CliRunner()


def run(*args: Any) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def _norms(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every norm's entry (name, role, module, parametrization, statistics, band...)."""
    return list(report["norms"])


def _rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """A series' rows without the checkpoint's path."""
    return [{k: v for k, v in row.items() if k != "checkpoint"} for row in report["rows"]]


def _scan_json(source: str | Path) -> dict[str, Any]:
    result = run("scan", source, "-f", "json", "-q")
    assert result.exit_code == 0, result.stderr
    return dict(json.loads(result.stdout))


def _header_and_norm_bytes(folder: Path) -> int:
    """What a scan must read: every shard's 8-byte length and JSON header, and the norm bytes."""
    checkpoint = measure(folder)
    headers = 0
    for shard in folder.glob("*.safetensors"):
        with open(shard, "rb") as handle:
            headers += 8 + int.from_bytes(handle.read(8), "little")
    tensors = open_checkpoint(folder).tensors
    return headers + sum(tensors[n.name].nbytes for n in checkpoint.report.norms)


@pytest.mark.parametrize("fixture", ["deepseek-v3-mtp", "llama-trained"])
def test_scan_s3_gives_the_local_report(s3: S3, fixture: str) -> None:
    local = FIXTURES / fixture
    url = s3.upload(local, f"run/{fixture}")
    here, there = _scan_json(local), _scan_json(url)
    assert _norms(there) == _norms(here)
    assert there["model"] == here["model"]
    assert there["summary"] == here["summary"]
    assert there["io"]["bytes_read"] == here["io"]["bytes_read"] == _header_and_norm_bytes(local)
    assert there["io"]["metadata_bytes"] == here["io"]["metadata_bytes"]
    assert there["io"]["requests"] > 0 and here["io"]["requests"] == 0
    # Headers, norms and the config/index are all that crossed the wire (plus coalesced gaps
    # within the 5 % budget); the shards are far larger.
    moved = there["io"]["bytes_transferred"]
    assert moved <= 1.05 * (there["io"]["bytes_read"] + there["io"]["metadata_bytes"])
    assert there["source"] == url and here["source"] == str(local)


def test_scan_one_object_and_file_urls(s3: S3, llama_dir: Path) -> None:
    url = s3.upload(llama_dir, "single")
    here = _scan_json(llama_dir / "model.safetensors")
    assert _norms(_scan_json(f"{url}/model.safetensors")) == _norms(here)
    assert _norms(_scan_json(llama_dir.resolve().as_uri())) == _norms(_scan_json(llama_dir))


def test_rescan_reads_headers_from_the_cache_and_never_a_stale_one(s3: S3, tmp_path: Path) -> None:
    first = write_checkpoint(tmp_path / "a", llama_tensors(), llama_config())
    url = s3.upload(first, "ckpt")
    cold = measure(url).report.io
    warm = measure(url).report.io
    # No index: the header is two GETs (its length, then the JSON); both are gone on a re-scan.
    assert warm.requests == cold.requests - 2
    assert warm.bytes_read == cold.bytes_read
    # Rewrite the shard with another layout (a new ETag): its new header is read, not the cached.
    second = write_checkpoint(
        tmp_path / "b", llama_tensors(layers=3, final=np.full(8, 0.5, np.float32)), llama_config(3)
    )
    s3.upload(second, "ckpt")
    again = measure(url).report
    assert again.norms == measure(second).report.norms and len(again.norms) == 7
    assert again.io.requests == measure(url).report.io.requests + 2


def test_series_on_a_bucket_prefix_gives_the_local_report(s3: S3, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    for step, fixture in [(0, "llama-init"), (100, "llama-trained"), (200, "llama-trained")]:
        shutil.copytree(FIXTURES / fixture, run_dir / f"checkpoint-{step}")
    (run_dir / "logs").mkdir()
    (run_dir / "logs" / "train.log").write_text("loss 1.0\n")
    url = s3.upload(run_dir, "run")
    here = run("series", run_dir, "-f", "json", "-q")
    there = run("series", url, "-f", "json")
    assert here.exit_code == there.exit_code == 0, there.stderr
    a, b = json.loads(here.stdout), json.loads(there.stdout)
    assert [c["step"] for c in b["checkpoints"]] == [0, 100, 200]
    assert [c["bytes_read"] for c in b["checkpoints"]] == [
        c["bytes_read"] for c in a["checkpoints"]
    ]
    assert _rows(b) == _rows(a)
    assert b["rows"][0]["checkpoint"] == f"{url}/checkpoint-0"
    assert b["summary"] == a["summary"]
    assert "ignored 1 sub-prefix(es) without a step number in the name: logs" in there.stderr


def test_diff_and_check_read_urls(s3: S3) -> None:
    a = s3.upload(FIXTURES / "llama-init", "init")
    b = s3.upload(FIXTURES / "llama-trained", "trained")
    remote = run("diff", a, b, "-f", "json", "-q")
    local = run("diff", FIXTURES / "llama-init", FIXTURES / "llama-trained", "-f", "json", "-q")
    assert remote.exit_code == local.exit_code == 0, remote.stderr
    assert json.loads(remote.stdout)["norms"] == json.loads(local.stdout)["norms"]
    assert (
        run("check", b, "-q").exit_code == run("check", FIXTURES / "llama-trained", "-q").exit_code
    )


def test_a_missing_bucket_is_one_line(s3: S3) -> None:
    result = run("scan", "s3://no-such-bucket-here/run/checkpoint-1")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: no such bucket 'no-such-bucket-here' (s3://no-such-bucket-here/run/checkpoint-1)\n"
    )
    series = run("series", "s3://no-such-bucket-here/run")
    assert series.exit_code == 2
    assert (
        series.stderr
        == "Error: no such bucket 'no-such-bucket-here' (s3://no-such-bucket-here/run)\n"
    )


def test_a_missing_object_is_one_line(s3: S3) -> None:
    s3.upload(FIXTURES / "llama-trained", "run/checkpoint-1")
    url = f"s3://{s3.bucket}/run/checkpoint-1/nope.safetensors"
    result = run("scan", url)
    assert result.exit_code == 2
    assert result.stderr == f"Error: no such object ({url})\n"
    empty = run("scan", f"s3://{s3.bucket}/run/checkpoint-2")
    assert (
        empty.stderr == f"Error: no objects under the prefix (s3://{s3.bucket}/run/checkpoint-2/)\n"
    )


def test_a_denied_key_is_one_line(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    url = s3.upload(FIXTURES / "llama-trained", "secret/checkpoint-1")
    key_id, secret = s3.reader("secret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with auth_enforced():
        denied = run("scan", url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAKEY")
        refused = run("scan", url)
    assert denied.exit_code == refused.exit_code == 2
    assert denied.stderr == (
        f"Error: access denied: the credentials in use may not read it ({url}/config.json)\n"
    )
    assert refused.stderr == f"Error: the credentials were refused (InvalidAccessKeyId) ({url})\n"


def test_without_the_extra_one_line_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "obstore", None)  # `import obstore` raises ImportError
    for url, extra in [("s3://b/x", "s3"), ("gs://b/x", "gcs"), ("az://c/x", "azure")]:
        result = run("scan", url)
        scheme = url.split(":")[0]
        assert result.exit_code == 2
        assert result.stderr == (
            f"Error: reading {scheme}:// URLs needs the {extra} extra: "
            f'pip install "normscope[{extra}]"\n'
        )


def test_a_corrupt_cached_header_is_dropped_and_read_again(s3: S3, tmp_path: Path) -> None:
    """Issue 28: every cache entry carries its digest; the object-store cache's too."""
    from normscope.sources.store import CORRUPT_CACHE, cache_root

    ckpt = write_checkpoint(tmp_path / "a", llama_tensors(), llama_config())
    url = s3.upload(ckpt, "ckpt")
    cold = measure(url).report
    root = cache_root() / "objects"
    entries = [p for p in root.rglob("*") if p.is_file()]
    assert entries
    for entry in entries:
        data = bytearray(entry.read_bytes())
        data[-1] ^= 1
        entry.write_bytes(bytes(data))
    again = measure(url).report
    assert again.norms == cold.norms
    assert again.io.requests == cold.io.requests  # the header was read from the store again
    assert sum(w.startswith(CORRUPT_CACHE) for w in again.warnings) == 1
