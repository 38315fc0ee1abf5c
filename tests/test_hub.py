"""sources/hub/: Hub repos scanned through the real huggingface_hub client against a fake Hub.

The fake Hub (tests/hubserver.py) is a real HTTP server on 127.0.0.1 serving the endpoints the
installed huggingface_hub calls, the way the Hub answers them; it counts what it serves, so the
tests check what normscope transfers: the same statistics as a local scan, within 1.1 x (header
+ norm + config/index bytes), nothing on a second run, nothing from a downloaded model, and one
`Error:` line for every way the Hub fails.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, llama_config, llama_tensors, write_checkpoint
from hubserver import FakeHub, point_huggingface_hub_at
from typer.testing import CliRunner, Result

import normscope
from normscope.cli import app
from normscope.errors import SourceError, UsageError
from normscope.schema import Report
from normscope.sources import hub as hubmod
from normscope.sources import open_checkpoint, ranged
from normscope.sources.hub import (
    HubSpec,
    list_hub_revisions,
    looks_like_hub,
    parse_hub_spec,
    with_revision,
)
from normscope.sources.hub import reader as hubreader
from normscope.sources.hub import retry as hubremote
from normscope.sources.store import read_cache_file

runner = CliRunner()
DS, LLAMA = "org/deepseek-mini", "org/llama-mini"


# --- checkpoints ----------------------------------------------------------------------------------


def deepseek_tensors(
    layers: int = 4, hidden: int = 128, experts: int = 4
) -> dict[str, torch.Tensor]:
    """A DeepSeek-V3 layout: MLA attention, FP8 weights with scales, MoE, one MTP depth."""
    gen = torch.Generator().manual_seed(0)
    q_lora, kv_lora, inter, moe, vocab = 64, 32, 256, 64, 512
    out: dict[str, torch.Tensor] = {}

    def bf16(name: str, *shape: int) -> None:
        out[name] = (0.02 * torch.randn(*shape, generator=gen)).to(torch.bfloat16)

    def fp8(name: str, rows: int, cols: int) -> None:
        out[name] = torch.randn(rows, cols, generator=gen).to(torch.float8_e4m3fn)
        out[name + "_scale_inv"] = torch.rand(-(-rows // 128), -(-cols // 128), generator=gen)

    def gain(name: str, n: int) -> None:
        out[name] = (1.0 + 0.1 * torch.randn(n, generator=gen)).to(torch.bfloat16)

    def layer(p: str, dense: bool) -> None:
        gain(f"{p}.input_layernorm.weight", hidden)
        gain(f"{p}.post_attention_layernorm.weight", hidden)
        fp8(f"{p}.self_attn.q_a_proj.weight", q_lora, hidden)
        gain(f"{p}.self_attn.q_a_layernorm.weight", q_lora)
        fp8(f"{p}.self_attn.q_b_proj.weight", 2 * hidden, q_lora)
        fp8(f"{p}.self_attn.kv_a_proj_with_mqa.weight", kv_lora + 8, hidden)
        gain(f"{p}.self_attn.kv_a_layernorm.weight", kv_lora)
        fp8(f"{p}.self_attn.kv_b_proj.weight", 2 * hidden, kv_lora)
        fp8(f"{p}.self_attn.o_proj.weight", hidden, hidden)
        if dense:
            for proj, rows, cols in (("gate", inter, hidden), ("up", inter, hidden)):
                fp8(f"{p}.mlp.{proj}_proj.weight", rows, cols)
            fp8(f"{p}.mlp.down_proj.weight", hidden, inter)
            return
        bf16(f"{p}.mlp.gate.weight", experts, hidden)
        out[f"{p}.mlp.gate.e_score_correction_bias"] = torch.zeros(experts)
        for e in [*(f"experts.{i}" for i in range(experts)), "shared_experts"]:
            fp8(f"{p}.mlp.{e}.gate_proj.weight", moe, hidden)
            fp8(f"{p}.mlp.{e}.up_proj.weight", moe, hidden)
            fp8(f"{p}.mlp.{e}.down_proj.weight", hidden, moe)

    bf16("model.embed_tokens.weight", vocab, hidden)
    for i in range(layers):
        layer(f"model.layers.{i}", dense=i < 1)
    gain("model.norm.weight", hidden)
    bf16("lm_head.weight", vocab, hidden)
    mtp = f"model.layers.{layers}"
    bf16(f"{mtp}.embed_tokens.weight", vocab, hidden)
    gain(f"{mtp}.enorm.weight", hidden)
    gain(f"{mtp}.hnorm.weight", hidden)
    bf16(f"{mtp}.eh_proj.weight", hidden, 2 * hidden)
    layer(mtp, dense=False)
    gain(f"{mtp}.shared_head.norm.weight", hidden)
    bf16(f"{mtp}.shared_head.head.weight", vocab, hidden)
    return out


def deepseek_config(layers: int = 4, hidden: int = 128) -> dict[str, Any]:
    config = json.loads((REPO_ROOT / "fixtures" / "deepseek-v3-mtp" / "config.json").read_text())
    config.update(
        hidden_size=hidden,
        num_hidden_layers=layers,
        q_lora_rank=64,
        kv_lora_rank=32,
        n_routed_experts=4,
        moe_intermediate_size=64,
        intermediate_size=256,
        vocab_size=512,
    )
    return config


@pytest.fixture(scope="module")
def ds_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-shard DeepSeek-like checkpoint with an index (about 1.5 MB)."""
    root = tmp_path_factory.mktemp("deepseek-mini")
    return write_checkpoint(root, deepseek_tensors(), deepseek_config(), shards=3)


@pytest.fixture(scope="module")
def ds_v2_dir(tmp_path_factory: pytest.TempPathFactory, ds_dir: Path) -> Path:
    """The same model one training step later: every gain scaled by 1.01."""
    root = tmp_path_factory.mktemp("deepseek-mini-v2")
    tensors = deepseek_tensors()
    for name, t in tensors.items():
        if name.endswith("norm.weight"):
            tensors[name] = (t.float() * 1.01).to(torch.bfloat16)
    return write_checkpoint(root, tensors, deepseek_config(), shards=3)


@pytest.fixture(scope="module")
def ds_many_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DeepSeek-like with 16 experts in 24 shards (about 2.8 MB): more shards than requests in
    flight, and most of them hold a few norms or none, as the 163 shards of DeepSeek-V3 do."""
    root = tmp_path_factory.mktemp("deepseek-many")
    return write_checkpoint(root, deepseek_tensors(experts=16), deepseek_config(), shards=24)


@pytest.fixture(scope="module")
def llama_dir_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A single-file Llama (model.safetensors, no index), 16 layers, about 1 MB."""
    root = tmp_path_factory.mktemp("llama-mini")
    final = np.linspace(0.5, 1.5, 128, dtype=np.float32)
    return write_checkpoint(root, llama_tensors(16, 128, final=final), llama_config(16, 128))


# --- the fake Hub, with huggingface_hub pointed at it ---------------------------------------------


@pytest.fixture
def hub(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ds_dir: Path, llama_dir_hub: Path
) -> Iterator[FakeHub]:
    """A running fake Hub with DS (tag v1 = main) and LLAMA; huggingface_hub online against it.

    huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import, so its constants are patched
    (test_env_vars_in_a_fresh_process checks the environment route). Backoff waits are zeroed.
    """
    from huggingface_hub.utils import close_session

    server = FakeHub().start()
    server.add_repo(DS, ds_dir, tags=("v1",))
    server.add_repo(LLAMA, llama_dir_hub)
    point_huggingface_hub_at(server, monkeypatch, tmp_path)
    try:
        yield server
    finally:
        close_session()
        server.stop()


def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_failure(result: Result, *fragments: str) -> str:
    """Exit 2, one `Error:` line (plus maybe a `Hint:`), no traceback, nothing on stdout."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert all(line.startswith(("Error:", "Hint:")) for line in lines), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    return errors[0]


def same_stats(a: Report, b: Report) -> None:
    assert a.model == b.model
    assert [dataclasses.asdict(n) for n in a.norms] == [dataclasses.asdict(n) for n in b.norms]
    assert a.summary == b.summary
    assert a.io.bytes_read == b.io.bytes_read
    assert a.io.metadata_bytes == b.io.metadata_bytes
    assert a.io.bytes_total == b.io.bytes_total


def hf_download(repo: str, directory: Path) -> None:
    """What a user's `hf download` leaves in the HF cache (through the real client)."""
    from huggingface_hub import hf_hub_download

    for path in sorted(directory.iterdir()):
        hf_hub_download(repo, path.name)


# --- specs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("org/name", HubSpec("org/name")),
        ("org/name@main", HubSpec("org/name", "main")),
        ("hf://org/name", HubSpec("org/name")),
        ("hf://models/org/name@step1000", HubSpec("org/name", "step1000")),
        ("EleutherAI/pythia-1b@refs/pr/3", HubSpec("EleutherAI/pythia-1b", "refs/pr/3")),
        ("a.b-c_d/e.f@v1.0", HubSpec("a.b-c_d/e.f", "v1.0")),
        ("name", None),
        ("org/name/extra", None),
        ("./org", None),
        ("org/name@", None),
        ("checkpoints/model.safetensors", None),
        ("org/config.json", None),
        ("org--x/name", None),
        ("/abs/path", None),
    ],
)
def test_parse_hub_spec(spec: str, expected: HubSpec | None) -> None:
    assert parse_hub_spec(spec) == expected


def test_hf_uri_of_another_repo_type_is_an_error() -> None:
    with pytest.raises(SourceError, match="not datasets"):
        parse_hub_spec("hf://datasets/org/name")
    with pytest.raises(SourceError, match="not a Hub model repo"):
        parse_hub_spec("hf://org/name/file.safetensors")
    assert looks_like_hub("hf://datasets/org/name")


def test_with_revision(tmp_path: Path) -> None:
    assert with_revision("org/name", "v1") == "org/name@v1"
    assert with_revision("hf://org/name@v1", "v1") == "hf://org/name@v1"
    with pytest.raises(UsageError, match="names revision 'v1' but --revision is 'v2'"):
        with_revision("org/name@v1", "v2")
    with pytest.raises(UsageError, match="is a local path"):
        with_revision(str(tmp_path), "v1")
    with pytest.raises(UsageError, match="is not one"):
        with_revision("not-a-repo", "v1")


def test_help_and_local_scans_do_not_import_huggingface_hub(llama_dir: Path) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from normscope.cli import app\n"
        "r = CliRunner()\n"
        "assert r.invoke(app, ['--help']).exit_code == 0\n"
        f"assert r.invoke(app, ['scan', {str(llama_dir)!r}]).exit_code == 0\n"
        "print('huggingface_hub' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_coalesce_merges_touching_ranges_and_small_gaps_within_budget() -> None:
    spans = {"a": [(0, 10), (10, 20), (30, 40), (1000, 1010)], "b": [(0, 5), (105, 110)]}
    assert ranged.coalesce(spans, budget=0) == {
        "a": [(0, 20), (30, 40), (1000, 1010)],
        "b": [(0, 5), (105, 110)],
    }
    # Smallest gaps first: 10 bytes (a), then 100 (b); 960 is over the budget.
    assert ranged.coalesce(spans, budget=110) == {"a": [(0, 40), (1000, 1010)], "b": [(0, 110)]}
    assert ranged.coalesce(spans, budget=10_000, max_gap=50) == {
        "a": [(0, 40), (1000, 1010)],
        "b": [(0, 5), (105, 110)],
    }


# --- scanning -------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["deepseek", "llama"])
def test_hub_scan_equals_local_scan_within_the_byte_bound(
    hub: FakeHub, which: str, ds_dir: Path, llama_dir_hub: Path
) -> None:
    repo, local = (DS, ds_dir) if which == "deepseek" else (LLAMA, llama_dir_hub)
    report = normscope.scan(repo)
    expected = normscope.scan(local)
    same_stats(report, expected)
    commit = hub.repos[repo].branches["main"]
    assert report.source == f"hf://{repo}@{commit}"
    # What normscope counted is what the server served.
    assert report.io.requests == hub.requests
    assert report.io.bytes_transferred == hub.bytes_sent
    # The bound of issue #5: headers + norms + config/index, 10% slack (the API answer included).
    useful = report.io.bytes_read + report.io.metadata_bytes
    assert hub.bytes_sent <= 1.1 * useful, (hub.bytes_sent, useful)
    assert hub.bytes_sent < 0.2 * report.io.bytes_total  # far from the shards' size
    # Per shard: one /resolve/ redirect, the header in one ranged GET sized from the index (in two
    # exact reads without an index), then norm ranges only.
    checkpoint = open_checkpoint(local)
    for shard in checkpoint.shards:
        name = Path(shard.path).name
        resolves = [s for s in hub.served if s.path.endswith("/" + name)]
        assert [s.status for s in resolves] == [302]
        sha = resolves[0].path and hub.repos[repo].commits[commit][name].sha256
        cdn = [s for s in hub.served if s.path == f"/blobs/{sha}"]
        assert all(s.status == 206 and s.range for s in cdn), cdn
        if which == "deepseek":
            m = re.fullmatch(r"bytes=0-(\d+)", cdn[0].range or "")
            assert m is not None, cdn[0]
            # The guess covered the header, reading at most 5% past it.
            assert shard.header_bytes <= int(m.group(1)) + 1 <= 1.05 * shard.header_bytes
            norm_reads = cdn[1:]
        else:
            assert [s.range for s in cdn[:2]] == ["bytes=0-7", f"bytes=8-{shard.header_bytes - 1}"]
            norm_reads = cdn[2:]
        norm_tensors = [n for n in shard.tensors if n.endswith("norm.weight") or "layernorm" in n]
        assert 1 <= len(norm_reads) <= len(norm_tensors)
        assert not any(s.authorized for s in cdn)  # the CDN never sees a token


def _header_reads(hub: FakeHub, repo: str, directory: Path) -> dict[str, list[str]]:
    """The ranges of the CDN GETs that started at byte 0 or ended at a header's end, by shard."""
    commit = hub.repos[repo].branches["main"]
    out = {}
    for shard in open_checkpoint(directory).shards:
        name = Path(shard.path).name
        sha = hub.repos[repo].commits[commit][name].sha256
        cdn = [s for s in hub.served if s.path == f"/blobs/{sha}"]
        assert all(s.status == 206 and s.range for s in cdn), cdn
        ranges = [s.range or "" for s in cdn]
        out[name] = [r for r in ranges if r.startswith("bytes=0-")] + [
            r for r in ranges if r.endswith(f"-{shard.header_bytes - 1}") and r != ranges[0]
        ]
    return out


def test_fewer_than_three_requests_per_shard(hub: FakeHub, ds_many_dir: Path) -> None:
    """Issue #6: a redirect, one header GET sized from the index, ~1 norm range per shard."""
    hub.add_repo("org/deepseek-many", ds_many_dir)
    report = normscope.scan("org/deepseek-many")
    local = normscope.scan(ds_many_dir)
    same_stats(report, local)
    shards = local.io.files
    assert shards == 24
    # All of them: model_info, config.json, the index, and every request to a shard.
    assert hub.requests / shards < 3, hub.requests
    resolves = [s for s in hub.served if s.server == "hub" and s.path.endswith(".safetensors")]
    assert len(resolves) == shards  # one redirect per shard, its target reused for every range
    headers = _header_reads(hub, "org/deepseek-many", ds_many_dir)
    # One GET per header; a guess from the headers seen so far may rarely fall a few bytes
    # short (which of them did depends on the order they arrived in), costing a second GET.
    short = [name for name, reads in headers.items() if len(reads) > 1]
    assert len(short) <= 2, headers
    useful = report.io.bytes_read + report.io.metadata_bytes
    assert hub.bytes_sent <= 1.1 * useful, (hub.bytes_sent, useful)
    # Bytes read past the headers: a few percent of them.
    header_bytes = sum(s.header_bytes for s in open_checkpoint(ds_many_dir).shards)
    fetched = sum(int(reads[-1].split("-")[1]) + 1 for reads in headers.values())
    assert header_bytes <= fetched <= 1.05 * header_bytes, (fetched, header_bytes)


def test_a_short_header_guess_costs_one_more_request_and_no_bytes(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, ds_dir: Path, ds_many_dir: Path
) -> None:
    # Model each header entry as 2 bytes per digit of the shard size only: far too short.
    monkeypatch.setattr(ranged, "HEADER_ENTRY", 0)
    report = normscope.scan(DS)
    same_stats(report, normscope.scan(ds_dir))
    headers = _header_reads(hub, DS, ds_dir)
    for shard in open_checkpoint(ds_dir).shards:
        reads = headers[Path(shard.path).name]
        assert len(reads) == 2, reads  # the guess, then the rest of the header, exactly
        guess = int(reads[0].split("-")[1]) + 1
        assert 8 < guess < shard.header_bytes
        assert reads[1] == f"bytes={guess}-{shard.header_bytes - 1}"
    useful = report.io.bytes_read + report.io.metadata_bytes
    assert hub.bytes_sent <= 1.1 * useful, (hub.bytes_sent, useful)
    # The headers cost exactly their bytes.
    header_ranges = {r for reads in headers.values() for r in reads}
    header_sent = sum(s.body_bytes for s in hub.served if s.range in header_ranges)
    assert header_sent == sum(s.header_bytes for s in open_checkpoint(ds_dir).shards)
    # With more shards than requests in flight, the first headers calibrate the later guesses.
    hub.add_repo("org/deepseek-many", ds_many_dir)
    hub.reset_log()
    many = normscope.scan("org/deepseek-many")
    same_stats(many, normscope.scan(ds_many_dir))
    headers = _header_reads(hub, "org/deepseek-many", ds_many_dir)
    short = [reads for reads in headers.values() if len(reads) == 2]
    # Only the guesses made before any header arrived (at most one per request in flight, and
    # rarely a calibrated one) fell short; each then cost one GET more, for exactly the rest.
    assert 1 <= len(short) <= hubreader.MAX_IN_FLIGHT + 2, headers
    for first, rest in short:
        assert rest.startswith(f"bytes={int(first.split('-')[1]) + 1}-")
    assert all(len(reads) <= 2 for reads in headers.values())
    assert hub.bytes_sent <= 1.1 * (many.io.bytes_read + many.io.metadata_bytes)


def test_header_sizer_guesses_from_the_index_then_from_the_headers_seen() -> None:
    from normscope.sources.ranged import GAP_SHARE, HEADER_ENTRY, HeaderSizer

    weight_map = {"a.weight": "s1", "bb.weight": "s1", "c.weight": "s2"}
    sizer = HeaderSizer(weight_map)
    # Before any header: names + (HEADER_ENTRY + 2 per digit of the size) per entry + 40.
    assert sizer.first_read("s1", 10_000_000) == 8 + 17 + 2 * (HEADER_ENTRY + 16) + 40
    assert sizer.first_read("other", 10_000_000) == 8  # not in the index: exact
    assert HeaderSizer(None).first_read("s1", 10_000_000) == 8  # no index (one file): exact
    assert sizer.first_read("s1", 100) == 100  # never past the end of the file
    # A header of 177 bytes for s1: 80 per entry beyond the names, 64 beyond the offsets' 16
    # digits; s2, a 100 MB shard, is guessed from that: 64 + 18 per entry.
    sizer.learn("s1", 10_000_000, 177, fetched=8 + 177 + 5)
    assert sizer.first_read("s2", 100_000_000) == 8 + 8 + 64 + 18 + 8
    assert (sizer.seen, sizer.over) == (185, 5)
    sizer.learn("s2", 10_000_000, 98, fetched=0)  # from a cache: 74 per entry, nothing over-read
    assert sizer.per_entry == 74 and sizer.over == 5
    # Once the bytes read past headers exceed GAP_SHARE of the headers, read exactly.
    sizer.over = int(GAP_SHARE * sizer.seen) + 1
    assert sizer.first_read("s1", 10_000_000) == 8


def test_a_released_checkpoint_through_the_fake_hub(hub: FakeHub, minilm: Path) -> None:
    """all-MiniLM-L6-v2 as released (the README's test install), with its repo's other files."""
    model = minilm
    hub.add_repo("sentence-transformers/all-MiniLM-L6-v2", model)
    report = normscope.scan("sentence-transformers/all-MiniLM-L6-v2")
    same_stats(report, normscope.scan(model))
    assert report.io.bytes_transferred <= 1.1 * (report.io.bytes_read + report.io.metadata_bytes)
    assert report.io.bytes_transferred < 0.001 * report.io.bytes_total


def test_progress_is_reported_through_the_given_factory(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[Any, ...]] = []

    class Task:
        def __init__(self, description: str, total: int) -> None:
            events.append(("start", description, total))

        def advance(self, amount: int) -> None:
            events.append(("advance", amount))

        def close(self) -> None:
            events.append(("close",))

    monkeypatch.setattr(hubreader, "PROGRESS_MIN", 1)
    normscope.measure(DS, progress=Task)
    starts = [e for e in events if e[0] == "start"]
    assert starts[0] == ("start", "Reading shard headers", 3)
    assert starts[1][1] == "Reading norm tensors"
    assert events.count(("close",)) == 2
    assert sum(e[1] for e in events if e[0] == "advance") == 3 + starts[1][2]


def test_second_scan_transfers_almost_nothing(hub: FakeHub) -> None:
    first = normscope.scan(DS)
    hub.reset_log()
    second = normscope.scan(DS)
    same_stats(first, second)
    # One request: resolving `main` to a commit (branches move); everything else is cached.
    assert [s.path for s in hub.served] == [f"/api/models/{DS}/revision/main"]
    assert second.io.requests == 1
    assert second.io.bytes_transferred == hub.bytes_sent < 0.05 * first.io.bytes_transferred
    # A pinned commit needs no request at all.
    hub.reset_log()
    pinned = normscope.scan(f"{DS}@{hub.repos[DS].branches['main']}")
    assert hub.requests == 0 and pinned.io.requests == 0 and pinned.io.bytes_transferred == 0
    same_stats(first, pinned)


def test_offline_scan_from_the_normscope_cache(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    online = normscope.scan(f"hf://{DS}@v1")
    hub.reset_log()
    offline(monkeypatch)
    for spec in (f"hf://{DS}@v1", f"{DS}@v1"):
        report = normscope.scan(spec)
        same_stats(online, report)
        assert report.io.requests == 0
    assert hub.requests == 0
    # Not cached: the default branch was never resolved here.
    result = invoke("scan", DS)
    assert_clean_failure(result, "offline (HF_HUB_OFFLINE=1)", "not cached", "hf download")


def test_a_model_in_the_hf_cache_is_read_there_even_offline(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, ds_dir: Path
) -> None:
    hf_download(DS, ds_dir)
    hub.reset_log()
    offline(monkeypatch)
    report = normscope.scan(DS)
    assert hub.requests == 0
    assert report.io.requests == 0 and report.io.bytes_transferred == 0
    same_stats(report, normscope.scan(ds_dir))
    # Nothing of the Hub repo needed caching (the local scan may keep its own layout).
    cache = Path(os.environ["NORMSCOPE_CACHE"])
    assert not list(cache.glob("models--*"))


def test_online_with_the_model_in_the_hf_cache_only_resolves_the_revision(
    hub: FakeHub, llama_dir_hub: Path
) -> None:
    hf_download(LLAMA, llama_dir_hub)
    hub.reset_log()
    report = normscope.scan(LLAMA)
    assert [s.path for s in hub.served] == [f"/api/models/{LLAMA}/revision/main"]
    same_stats(report, normscope.scan(llama_dir_hub))


def test_a_partial_hf_download_fills_in_from_the_hub(hub: FakeHub, ds_dir: Path) -> None:
    from huggingface_hub import hf_hub_download

    hf_hub_download(DS, "config.json")
    hf_hub_download(DS, "model.safetensors.index.json")
    hf_hub_download(DS, "model-00001-of-00003.safetensors")
    hub.reset_log()
    report = normscope.scan(DS)
    same_stats(report, normscope.scan(ds_dir))
    fetched = {s.path for s in hub.served}
    assert not any(
        p.endswith(("config.json", "index.json", "00001-of-00003.safetensors")) for p in fetched
    )


def test_a_revision_other_than_main(hub: FakeHub, ds_v2_dir: Path, ds_dir: Path) -> None:
    hub.add_commit(DS, ds_v2_dir, branch="main", tags=("v2",))
    old = normscope.scan(f"{DS}@v1")
    new = normscope.scan(DS)
    same_stats(old, normscope.scan(ds_dir))
    same_stats(new, normscope.scan(ds_v2_dir))
    result = invoke("diff", f"{DS}@v1", f"{DS}@v2", "-f", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["norms"]
    assert rows and all(abs(r["rel_change"] - 0.01) < 0.01 for r in rows)


def test_a_local_path_wins_over_a_repo_id(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, llama_dir_hub: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    local = tmp_path / DS
    local.mkdir(parents=True)
    for path in llama_dir_hub.iterdir():
        (local / path.name).write_bytes(path.read_bytes())
    report = normscope.scan(DS)
    assert hub.requests == 0
    assert report.source == DS and report.model.family == "llama"


# --- the CLI: --revision, JSON, progress, cache ---------------------------------------------------


def test_cli_scan_json_has_the_transfer_figures(hub: FakeHub) -> None:
    result = invoke("scan", LLAMA, "-f", "json")
    assert result.exit_code == 0, result.stderr
    io = json.loads(result.stdout)["io"]
    assert list(io)[-2:] == ["requests", "bytes_transferred"]
    assert io["requests"] == hub.requests and io["bytes_transferred"] == hub.bytes_sent


def test_revision_option_and_at_revision_must_agree(hub: FakeHub, llama_dir: Path) -> None:
    assert invoke("scan", DS, "--revision", "v1").exit_code == 0
    assert invoke("scan", f"{DS}@v1", "--revision", "v1").exit_code == 0
    for args, says in [
        ((f"{DS}@v1", "--revision", "main"), "names revision 'v1' but --revision is 'main'"),
        ((str(llama_dir), "--revision", "main"), "is a local path"),
    ]:
        result = invoke("scan", *args)
        assert result.exit_code == 2, result.stderr
        assert says in result.stderr
    result = invoke("diff", f"{DS}@v1", DS, "--revision", "main")
    assert result.exit_code == 2 and "names revision 'v1'" in result.stderr


def test_cache_command_shows_and_clears(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(os.environ["NORMSCOPE_CACHE"])
    empty = invoke("cache")
    assert empty.exit_code == 0 and empty.stdout.startswith(f"{root}: 0 files")
    normscope.scan(DS)
    shown = invoke("cache")
    assert shown.exit_code == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.startswith(DS))
    commits, files = map(int, row.split()[1:3])
    assert commits == 1 and files > 5
    cleared = invoke("cache", "--clear")
    assert cleared.exit_code == 0 and cleared.stdout == ""
    assert "Removed" in cleared.stderr and DS not in invoke("cache").stdout
    assert not list(root.rglob("*.json"))
    # Cleared means transferred again.
    hub.reset_log()
    normscope.scan(DS)
    assert hub.requests > 3


def test_cache_writes_are_atomic_and_keyed_by_commit_and_etag(hub: FakeHub) -> None:
    normscope.scan(DS)
    root = Path(os.environ["NORMSCOPE_CACHE"])
    folder = root / "models--org--deepseek-mini"
    commit = hub.repos[DS].branches["main"]
    warnings: list[str] = []
    assert read_cache_file(folder / "refs" / "main", warnings) == commit.encode()
    assert warnings == []
    assert (folder / "manifests" / f"{commit}.json").is_file()
    blobs = hub.repos[DS].commits[commit]
    headers = {p.name for p in (folder / "headers").iterdir()}
    assert headers == {b.sha256 for n, b in blobs.items() if n.endswith(".safetensors")}
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]
    assert (root / "CACHEDIR.TAG").is_file()


# --- errors ---------------------------------------------------------------------------------------


def test_repo_not_found(hub: FakeHub) -> None:
    result = invoke("scan", "org/no-such-model")
    assert_clean_failure(result, "no such Hub model repo", "hf auth login")


def test_revision_not_found(hub: FakeHub) -> None:
    result = invoke("scan", f"{DS}@no-such-branch")
    assert_clean_failure(result, "revision 'no-such-branch' not found", hub.endpoint)


def test_private_repo_without_a_token(hub: FakeHub, ds_dir: Path) -> None:
    hub.add_repo("org/secret", ds_dir, private=True)
    assert_clean_failure(invoke("scan", "org/secret"), "or it is private", "HF_TOKEN")


def test_gated_repo_without_and_with_a_token(
    hub: FakeHub, llama_dir_hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo("org/gated", llama_dir_hub, gated=True)
    assert_clean_failure(invoke("scan", "org/gated"), "gated", "hf auth login", "HF_TOKEN")
    hub.grant("hf_other")
    monkeypatch.setenv("HF_TOKEN", "hf_other")
    assert_clean_failure(invoke("scan", "org/gated"), "no access", "request access")
    hub.grant("hf_ok", "org/gated")
    monkeypatch.setenv("HF_TOKEN", "hf_ok")
    hub.reset_log()
    assert invoke("scan", "org/gated").exit_code == 0
    # The token went to the Hub, never to the CDN.
    assert all(s.authorized == (s.server == "hub") for s in hub.served)


def test_invalid_token(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_expired")
    assert_clean_failure(invoke("scan", LLAMA), "refused the token", "hf auth login")


@pytest.mark.parametrize("where", ["GET hub:/api/", "GET cdn:/blobs/"])
def test_rate_limited(hub: FakeHub, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reset beyond the deadline is reported at once (within it, it is waited: below)."""
    monkeypatch.setenv("NORMSCOPE_HUB_TIMEOUT", "0.9")
    hub.rate_limit(where)
    line = assert_clean_failure(invoke("scan", LLAMA), "rate-limited", "retry in about 1 s")
    assert "429" in line


def test_server_errors_are_retried(hub: FakeHub, llama_dir_hub: Path) -> None:
    hub.fail("GET cdn:/blobs/", 503, times=2)
    hub.fail("GET hub:/api/models", 502, times=1)
    report = normscope.scan(LLAMA)
    same_stats(report, normscope.scan(llama_dir_hub))
    # Each failure was answered and then retried (RETRY_WAIT is 0 in the `hub` fixture).
    assert sorted(s.status for s in hub.served if s.status >= 500) == [502, 503, 503]
    hubmod.clear_cache()
    hub.fail("GET cdn:/blobs/", 503)
    result = invoke("scan", LLAMA)
    # normscope retries quietly (the library's retry log lines stay out): one error, one hint.
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"Error: the Hub answered HTTP 503 while reading model.safetensors ({LLAMA}@main)",
        "Hint: retry later",
    ]


def test_a_transfer_that_keeps_breaking_is_an_error_and_writes_nothing(
    hub: FakeHub, tmp_path: Path
) -> None:
    hub.break_after("GET cdn:/blobs/", 4)
    out = tmp_path / "report.json"
    result = invoke("scan", DS, "-f", "json", "-o", out)
    assert_clean_failure(result, "broke after", "retries")
    assert not out.exists()
    assert not list(tmp_path.glob(".report.json*"))


def test_a_transfer_that_breaks_once_is_resumed(hub: FakeHub, ds_dir: Path) -> None:
    hub.break_after(r"GET cdn:/blobs/\S+ bytes=0-", 100, times=2)  # two header reads break
    hub.break_after(r"GET hub:\S+index.json", 50, times=1)  # the (gzipped) index restarts
    report = normscope.scan(DS)
    same_stats(report, normscope.scan(ds_dir))
    broken = [
        s for s in hub.served if s.server == "cdn" and s.range and s.range.startswith("bytes=0-")
    ]
    assert sorted(s.body_bytes for s in broken)[:2] == [100, 100]
    resumed = [s for s in hub.served if s.range and s.range.startswith("bytes=100-")]
    assert len(resumed) == 2  # from where each broke, not from the start
    index = [s for s in hub.served if s.path.endswith("index.json")]
    assert len(index) == 2 and index[0].body_bytes == 50
    assert report.io.bytes_transferred == hub.bytes_sent


def test_a_server_that_ignores_range_is_refused(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hubserver

    monkeypatch.setattr(hubserver, "_parse_range", lambda header, size: None)
    result = invoke("scan", LLAMA)
    assert_clean_failure(result, "will not download the whole file")
    assert [s.status for s in hub.served if s.server == "cdn"] == [200]  # one, then hung up


def test_unreachable_hub_without_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants
    from huggingface_hub.utils import close_session

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agents.json"))
    monkeypatch.setattr(hubremote, "RETRY_WAIT", 0.0)
    monkeypatch.setenv("NORMSCOPE_CACHE", str(tmp_path / "cache"))
    close_session()
    assert_clean_failure(invoke("scan", LLAMA), "cannot reach the Hub", "HF_ENDPOINT")


def test_an_unreachable_hub_falls_back_to_the_cache_with_a_warning(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    first = normscope.scan(f"{DS}@v1")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    report = normscope.scan(f"{DS}@v1")
    same_stats(first, report)
    assert report.io.requests == 0
    assert any("cannot reach the Hub" in w and "cached commit" in w for w in report.warnings)


def test_offline_with_nothing_cached() -> None:
    # conftest's hermetic fixture: HF_HUB_OFFLINE=1, empty caches.
    result = invoke("scan", "org/never-seen@main")
    assert_clean_failure(result, "offline (HF_HUB_OFFLINE=1)", "org/never-seen@main")


# --- revisions for `series` -----------------------------------------------------------------------


def test_list_hub_revisions_orders_by_step(
    hub: FakeHub, llama_dir_hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo("org/run", llama_dir_hub)
    for name in ["step300", "step20", "step1000", "stage2-ingredient1-step5", "stage1-step7"]:
        hub.add_commit("org/run", llama_dir_hub, branch=name)
    hub.add_commit("org/run", llama_dir_hub, branch=None, tags=("step100-final",))
    assert list_hub_revisions("org/run", "step*") == [
        "step20",
        "step100-final",
        "step300",
        "step1000",
    ]
    assert list_hub_revisions("hf://org/run", "stage*-step*") == [
        "stage1-step7",
        "stage2-ingredient1-step5",
    ]
    assert list_hub_revisions("org/run", "step1000, step20 ,main") == [
        "step20",
        "step1000",
        "main",
    ]
    with pytest.raises(SourceError, match="no branch or tag of the Hub repo matches 'ckpt-\\*'"):
        list_hub_revisions("org/run", "ckpt-*")
    # Offline, the revisions scanned before answer.
    normscope.scan("org/run@step20")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert list_hub_revisions("org/run", "step*") == ["step20"]


def test_series_follows_hub_revisions(hub: FakeHub, ds_dir: Path, ds_v2_dir: Path) -> None:
    hub.add_repo("org/run", ds_dir, branch="stage1-step2000-tokens8B")
    hub.add_commit("org/run", ds_v2_dir, branch="stage1-step10000-tokens40B")
    hub.add_commit("org/run", ds_dir, branch="stage1-step500-tokens2B")
    hub.add_commit("org/run", ds_dir, branch="stage2-step100-tokens1B")
    result = invoke("series", "org/run", "--revisions", "stage1-step*", "-f", "json", "-j", "1")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [c["path"] for c in data["checkpoints"]] == [
        "org/run@stage1-step500-tokens2B",
        "org/run@stage1-step2000-tokens8B",
        "org/run@stage1-step10000-tokens40B",
    ]
    assert [c["step"] for c in data["checkpoints"]] == [500, 2000, 10000]
    for args in (("org/run@main",), ("org/run", "org/other"), ("hf://datasets/x/y",)):
        bad = invoke("series", *args, "--revisions", "step*")
        assert bad.exit_code == 2 and "needs exactly one Hub repo" in bad.stderr
    missing = invoke("series", "org/run", "--revisions", "ckpt-*")
    assert_clean_failure(missing, "no branch or tag of the Hub repo matches 'ckpt-*'")


# --- the environment route and the real Hub -------------------------------------------------------


def test_env_vars_in_a_fresh_process(hub: FakeHub, tmp_path: Path, llama_dir_hub: Path) -> None:
    """HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE set before import, as a user would."""
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.endpoint,
        "HF_HOME": str(tmp_path / "home"),
        "NORMSCOPE_CACHE": "",
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_HUB_CACHE", None)
    cmd = [sys.executable, "-m", "normscope", "scan", LLAMA, "-f", "json"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["io"]["requests"] == hub.requests
    assert (tmp_path / "home" / "assets" / "normscope" / "models--org--llama-mini").is_dir()
    env["HF_HUB_OFFLINE"] = "1"
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["io"]["requests"] == 0
    assert re.fullmatch(r"hf://org/llama-mini@[0-9a-f]{40}", data["source"])


@pytest.mark.online
def test_real_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A small real repo, headers and norms only (pytest --online)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("NORMSCOPE_CACHE", str(tmp_path / "cache"))
    report = normscope.scan("sentence-transformers/all-MiniLM-L6-v2")
    assert report.model.family == "bert" and len(report.norms) == 13
    useful = report.io.bytes_read + report.io.metadata_bytes
    assert report.io.bytes_transferred <= 1.1 * useful + 64_000  # + the model_info answer
    assert report.io.bytes_transferred < 0.01 * report.io.bytes_total
    again = normscope.scan("sentence-transformers/all-MiniLM-L6-v2")
    assert again.io.requests == 1


# --- faults (issue #12): exit code, the exact stderr lines, and the cache afterwards ------------


def cache_files() -> list[str]:
    """What normscope's Hub cache holds (relative paths; CACHEDIR.TAG and the local layout cache
    of a local scan left out)."""
    root = Path(os.environ["NORMSCOPE_CACHE"])
    if not root.is_dir():
        return []
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.name != "CACHEDIR.TAG" and p.relative_to(root).parts[0] != "layouts"
    )


def stderr_lines(result: Result) -> list[str]:
    assert result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()


def llama_size(llama_dir_hub: Path) -> int:
    return (llama_dir_hub / "model.safetensors").stat().st_size


W = f"({LLAMA}@main)"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_once_is_retried_quietly_and_counted(
    hub: FakeHub, llama_dir_hub: Path, status: int
) -> None:
    hub.fail("GET cdn:/blobs/", status, times=1)
    hub.fail("GET hub:/api/models", status, times=1)
    result = invoke("scan", LLAMA, "-f", "json")
    assert result.exit_code == 0 and result.stderr == "", result.stderr  # no stray lines
    io = json.loads(result.stdout)["io"]
    assert io["requests"] == hub.requests  # the retried requests included
    assert [s.status for s in hub.served].count(status) == 2
    assert any(p.startswith("models--org--llama-mini/headers/") for p in cache_files())


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_always_is_one_line_and_caches_nothing(hub: FakeHub, status: int) -> None:
    hub.fail("GET cdn:/blobs/", status)
    result = invoke("scan", LLAMA)
    assert result.exit_code == 2
    assert stderr_lines(result) == [
        f"Error: the Hub answered HTTP {status} while reading model.safetensors {W}",
        "Hint: retry later",
    ]
    assert [s.status for s in hub.served if s.server == "cdn"] == [status] * (hubremote.RETRIES + 1)
    assert cache_files() == []


def test_429_with_retry_after(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NORMSCOPE_HUB_TIMEOUT", "5")
    hub.fail("GET cdn:/blobs/", 429, headers={"Retry-After": "7"})
    result = invoke("scan", LLAMA)
    assert result.exit_code == 2
    assert stderr_lines(result) == [
        f"Error: the Hub rate-limited these requests (HTTP 429) while reading model.safetensors "
        f"{W}",
        "Hint: retry in about 7 s; to get higher limits, log in with `hf auth login` or set "
        "HF_TOKEN",
    ]
    assert len([s for s in hub.served if s.server == "cdn"]) == 1  # reported, not waited out
    assert cache_files() == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (
            401,
            [
                f"Error: the Hub refused the token (HTTP 401) {W}",
                "Hint: log in with `hf auth login` or set HF_TOKEN again: the token is invalid "
                "or expired",
            ],
        ),
        (403, [f"Error: the Hub answered HTTP 403 while reading model.safetensors {W}"]),
    ],
)
def test_401_403_from_the_cdn(hub: FakeHub, status: int, expected: list[str]) -> None:
    hub.fail("GET cdn:/blobs/", status)
    result = invoke("scan", LLAMA)
    assert result.exit_code == 2
    assert stderr_lines(result) == expected
    # Refused right after /resolve/ redirected there: no second try, no retries.
    assert [s.status for s in hub.served if s.server == "cdn"] == [status]
    assert cache_files() == []


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "short-body"])
def test_a_body_that_always_breaks(hub: FakeHub, llama_dir_hub: Path, reset: bool) -> None:
    hub.inject("GET cdn:/blobs/", break_after=4, reset=reset)
    result = invoke("scan", LLAMA)
    assert result.exit_code == 2
    lines = stderr_lines(result)
    assert len(lines) == 2, lines
    assert re.fullmatch(
        rf"Error: the transfer of model\.safetensors broke after \d+ of \d+ bytes and "
        rf"{hubremote.RETRIES} retries: .+ \({re.escape(LLAMA)}@main\)",
        lines[0],
    ), lines[0]
    assert lines[1] == "Hint: check the connection and run again"
    assert cache_files() == []


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "short-body"])
def test_a_body_that_breaks_once_is_resumed(hub: FakeHub, llama_dir_hub: Path, reset: bool) -> None:
    hub.inject(r"GET cdn:/blobs/\S+ bytes=8-", break_after=100, reset=reset, times=1)
    result = invoke("scan", LLAMA, "-f", "json")
    assert result.exit_code == 0 and result.stderr == "", result.stderr
    assert json.loads(result.stdout)["io"]["requests"] == hub.requests
    resumed = [s for s in hub.served if s.range and s.range.startswith("bytes=108-")]
    assert len(resumed) == 1


def test_a_server_that_ignores_range(hub: FakeHub, llama_dir_hub: Path) -> None:
    hub.inject("GET cdn:/blobs/", ignore_range=True)
    result = invoke("scan", LLAMA)
    assert result.exit_code == 2
    assert stderr_lines(result) == [
        "Error: the server answered a ranged request for model.safetensors with HTTP 200: "
        f"normscope will not download the whole file {W}",
        "Hint: if HF_ENDPOINT points at a mirror, make it honour Range requests, or download "
        f"the model with `hf download {LLAMA}` and scan it from the HF cache",
    ]
    assert cache_files() == []


def test_a_wrong_content_range(hub: FakeHub, llama_dir_hub: Path) -> None:
    size = llama_size(llama_dir_hub)
    hub.inject("GET cdn:/blobs/", override={"Content-Range": f"bytes 1-8/{size}"})
    result = invoke("scan", LLAMA)
    assert result.exit_code == 2
    assert stderr_lines(result) == [
        f"Error: unexpected Content-Range 'bytes 1-8/{size}' for bytes 0-7 of model.safetensors "
        f"({size} bytes): the file changed or the server is not a Hub"
    ]
    assert cache_files() == []


def test_a_stalled_body_fails_within_the_timeout(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NORMSCOPE_HUB_TIMEOUT", "1.5")
    hub.inject("GET cdn:/blobs/", break_after=4, stall=60)
    started = time.monotonic()
    result = invoke("scan", LLAMA)
    elapsed = time.monotonic() - started
    assert result.exit_code == 2
    assert stderr_lines(result) == [
        f"Error: no complete answer for model.safetensors within 1.5 s (4 of 8 bytes): the "
        f"transfer stalled {W}",
        "Hint: check the connection and run again; NORMSCOPE_HUB_TIMEOUT sets the limit in seconds",
    ]
    assert 1.5 <= elapsed < 6, elapsed
    assert cache_files() == []
    monkeypatch.setenv("NORMSCOPE_HUB_TIMEOUT", "soon")
    assert stderr_lines(invoke("scan", LLAMA)) == [
        "Error: NORMSCOPE_HUB_TIMEOUT must be a positive number of seconds, not 'soon'",
        "Hint: unset NORMSCOPE_HUB_TIMEOUT for the default of 60 s",
    ]


def test_an_etag_change_is_an_error_and_caches_nothing(hub: FakeHub) -> None:
    other = "ab" * 32
    hub.inject(
        rf"GET hub:/{LLAMA}/resolve/\w+/model.safetensors",
        override={"X-Linked-Etag": f'"{other}"'},
    )
    result = invoke("scan", LLAMA)
    assert result.exit_code == 2
    commit = hub.repos[LLAMA].branches["main"]
    sha = hub.repos[LLAMA].commits[commit]["model.safetensors"].sha256
    assert stderr_lines(result) == [
        f"Error: the Hub served model.safetensors with etag {other[:12]}, but the file list of "
        f"commit {commit[:12]} gives {sha[:12]}: the file changed during the scan, or a proxy "
        f"serves another version {W}",
        "Hint: run again; nothing from this scan was cached",
    ]
    # The redirect was followed (8 bytes), but nothing read from it was used or kept.
    assert len([s for s in hub.served if s.server == "cdn"]) == 1
    assert cache_files() == []


def test_a_commit_change_mid_scan_is_an_error_and_caches_nothing(
    hub: FakeHub, ds_v2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = hub.repos[DS].branches["main"]
    new = hub.add_commit(DS, ds_v2_dir, branch=None)
    # The second shard's /resolve/ answers with the other commit's file (a proxy that ignores the
    # revision, or the Hub between two pushes).
    hub.inject(rf"GET hub:/{DS}/resolve/\w+/model-00002", commit=new)
    result = invoke("scan", DS)
    assert result.exit_code == 2
    assert stderr_lines(result) == [
        f"Error: the Hub served model-00002-of-00003.safetensors of commit {new[:12]}, not of "
        f"{old[:12]} whose file list this scan read: the repo changed during the scan, or a "
        f"proxy ignores the revision ({DS}@main)",
        "Hint: run again to scan the new commit; nothing from this scan was cached",
    ]
    assert cache_files() == []
    # Every request named the commit, never the branch.
    resolves = [s.path for s in hub.served if "/resolve/" in s.path]
    assert resolves and all(f"/resolve/{old}/" in p for p in resolves)
    # And so a later offline scan pinned to the old commit finds nothing to trust.
    offline(monkeypatch)
    assert_clean_failure(invoke("scan", f"{DS}@{old}"), "offline (HF_HUB_OFFLINE=1)")


def test_a_commit_change_after_the_headers_removes_what_the_scan_cached(
    hub: FakeHub, ds_v2_dir: Path
) -> None:
    new = hub.add_commit(DS, ds_v2_dir, branch=None)
    # The headers arrive; then the CDN refuses the norm reads (an expired signed URL): normscope
    # goes through /resolve/ again, which now serves the other commit.
    hub.fail(r"GET cdn:/blobs/\S+ bytes=(?!0-)", 403, times=1)
    hub.inject(rf"GET hub:/{DS}/resolve/", commit=new)
    hub.faults[-1].times = None
    calls = {"n": 0}
    original = hub._fault

    def later(key: str) -> Any:  # the commit fault only after the three header resolves
        if "/resolve/" in key:
            calls["n"] += 1
            if calls["n"] <= 3:
                return None
        return original(key)

    hub._fault = later  # type: ignore[method-assign]
    result = invoke("scan", DS)
    assert result.exit_code == 2
    lines = stderr_lines(result)
    assert lines[0].startswith("Error: the Hub served model-0000") and "of commit" in lines[0]
    assert cache_files() == []


def test_hub_logging_is_quiet_unless_verbose(
    hub: FakeHub, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    log = logging.getLogger("huggingface_hub.utils._http")
    level = logging.getLogger("huggingface_hub").level
    with hubmod.quiet_hub_logging():
        log.warning("Retrying in 1s [Retry 1/5].")
    assert caplog.records == []
    assert logging.getLogger("huggingface_hub").level == level  # restored
    with hubmod.quiet_hub_logging(verbose=True):
        log.warning("Retrying in 1s [Retry 1/5].")
    with hubmod.quiet_hub_logging(True):
        log.warning("Retrying in 1s [Retry 1/5].")
    assert [r.getMessage() for r in caplog.records] == ["Retrying in 1s [Retry 1/5]."] * 2


def test_the_hub_spec_is_parsed_once_per_scan(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 22: the source is parsed once into a typed spec; `--revision` travels as its field.
    from normscope.sources.hub import spec as hub_spec

    calls: list[str] = []
    parse = hub_spec.parse_hub_spec

    def counted(text: str) -> Any:
        calls.append(text)
        return parse(text)

    monkeypatch.setattr(hub_spec, "parse_hub_spec", counted)
    result = invoke("scan", DS, "--revision", "v1", "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert calls == [DS]
    assert json.loads(result.stdout)["source"].startswith(f"hf://{DS}@")


def test_a_pasted_hub_url_scans_that_repo_at_that_revision(hub: FakeHub) -> None:
    by_id = invoke("scan", f"{DS}@v1", "-f", "json")
    by_url = invoke("scan", f"https://huggingface.co/{DS}/tree/v1", "-f", "json")
    assert by_id.exit_code == 0 and by_url.exit_code == 0, by_url.stderr
    assert json.loads(by_url.stdout)["source"] == json.loads(by_id.stdout)["source"]
    assert json.loads(by_url.stdout)["norms"] == json.loads(by_id.stdout)["norms"]
    page = invoke("scan", f"https://huggingface.co/datasets/{DS}")
    assert page.exit_code == 2 and "normscope reads model repos, not datasets" in page.stderr
