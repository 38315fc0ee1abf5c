"""Faults that are never healthy, found in the numbers of one scan: `check` fails them by default.

Each is one `CheckName`, each with the reason a released model cannot show it (issue #24):

- `zero_channels`: exactly-zero channels in the gain of a standard norm (effective = stored).
  Training never lands a float on exactly 0 (BF16 keeps 8 exponent bits of subnormals around it);
  a checkpoint merge, a pruning mask or a shape-mismatched copy does, and the channel is dead.
  NOTE: offset norms are exempt: their effective gain 1 + w is exactly 0 whenever a trained w
  rounds to -1.0 in BF16, which real releases show (Gemma-3-270M: 143 such channels).
- `offset`: the values contradict the parametrization. Read as offset (1 + w), a checkpoint whose
  converter already added the 1 has effective gains 2 + w: no channel is damped any more (< 1).
  Read as standard, zero-centred weights put a large share of the gains below 0 (a negative gain
  flips its feature). Healthy trained models damp some channels and flip almost none: measured,
  SmolLM2-135M, Gemma-3-270M and all-MiniLM-L6-v2 (the calibration set) flip 0.06-0.83% of their
  channels and (Gemma-3, offset) damp 12%; Qwen2.5-Coder-0.5B, kept out, flips 0.83%.
  Limits: offset norms fail with fewer than `MIN_DAMPED` of their moved channels below 1;
  standard norms with more than `MAX_FLIPPED` of their channels below 0, or all exactly 0 (an
  offset norm at init read as standard).
- `identical`: two layers' norms of the same kind hold bit-identical gains in a trained
  checkpoint (a copy bug: one layer saved twice). At init every gain is the identity, so only norms
  that moved from it (and are not constant) count.
- `mtp_declared`: the config declares more MTP depths than the checkpoint holds norms for
  (Hugging Face re-saves drop MTP weights: the MTP loss then trains nothing).
- `norm_dtype`: the norms are stored in a float format with fewer mantissa bits than the
  checkpoint's other floating tensors (a converter that cast them down, e.g. F16 or BF16 norms in an
  F32 checkpoint): precision lost where a gain's small moves live.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from normscope.enums import CheckName, Module, Parametrization, Role, Severity
from normscope.scanner import Measured
from normscope.schema import Finding, NormStats, Policy

MIN_DAMPED = 0.01
"""Offset norms: at least this share of the channels that moved from 1 sit below 1."""
MAX_FLIPPED = 0.05
"""Standard norms: at most this share of the channels are negative."""
MANTISSA_BITS = {"F64": 52, "F32": 23, "F16": 10, "BF16": 7, "F8_E4M3": 3, "F8_E5M2": 2}


def fault_findings(measured: Measured, policy: Policy) -> list[Finding]:
    """Every fault check of `policy` that is not `off`, one finding per subject."""
    sev = policy.severity
    out: list[Finding] = []
    norms = measured.report.norms
    if sev.zero_channels is not Severity.off:
        out += _zero_findings(norms, measured, sev.zero_channels)
    if sev.offset is not Severity.off:
        out += _offset_findings(norms, measured, sev.offset)
    if sev.identical is not Severity.off:
        out += _identical_findings(norms, measured, sev.identical)
    if sev.mtp_declared is not Severity.off and measured.declared_mtp:
        out.append(_declared_finding(measured, sev.mtp_declared))
    if sev.norm_dtype is not Severity.off:
        out.append(_dtype_finding(measured, sev.norm_dtype))
    return out


def _finding(
    check: CheckName,
    subject: str,
    ok: bool,
    severity: Severity,
    value: float | None,
    limit: str,
    message: str,
    fix: str | None,
) -> Finding:
    return Finding(check, subject, ok, severity, value, limit, message, None if ok else fix)


def _zero_findings(
    norms: Sequence[NormStats], measured: Measured, severity: Severity
) -> list[Finding]:
    out = []
    for n in norms:
        if n.parametrization is not Parametrization.standard or n.name not in measured.gains:
            continue
        gain = measured.gains[n.name]
        zeros = int((gain == 0).sum())
        if zeros == 0 or zeros == gain.size:  # all zero: the offset check's case
            continue
        first = np.flatnonzero(gain == 0)[:5].tolist()
        out.append(
            _finding(
                CheckName.zero_channels,
                n.name,
                False,
                severity,
                float(zeros),
                "== 0",
                f"{n.name} has {zeros} of {gain.size} channels at exactly 0 (channels "
                f"{', '.join(map(str, first))}{'...' if zeros > 5 else ''}): dead features",
                "a merge, pruning mask or partial copy zeroed them: re-export the norms from "
                "the source checkpoint",
            )
        )
    if not out:
        out.append(
            _finding(
                CheckName.zero_channels,
                "model",
                True,
                severity,
                0.0,
                "== 0",
                "no standard norm has exactly-zero channels",
                None,
            )
        )
    return out


def _offset_findings(
    norms: Sequence[NormStats], measured: Measured, severity: Severity
) -> list[Finding]:
    # NOTE: counted one norm at a time, never concatenated: the gains decode at each lookup
    # (`analysis.Gains`), and all of them at once were 122 MiB at 1.5M tensors (issue 29). A
    # count over a count is the mean of the concatenated booleans exactly (both exact in float64).
    offset = [n.name for n in norms if n.parametrization is Parametrization.offset]
    standard = [n.name for n in norms if n.parametrization is Parametrization.standard]
    out = []
    if offset:
        moved = below = 0
        for name in offset:
            gain = measured.gains[name]
            moved += int((gain != 1.0).sum())
            below += int((gain < 1.0).sum())
        damped = below / moved if moved else 1.0
        ok = damped >= MIN_DAMPED
        out.append(
            _finding(
                CheckName.offset,
                "model",
                ok,
                severity,
                damped,
                f">= {MIN_DAMPED:g} damped",
                f"{len(offset)} offset (1 + w) norm(s): {100 * damped:.2f}% of the moved "
                "channels below 1"
                + ("" if ok else ": offset applied twice? (the stored weights already hold 1 + w)"),
                "the file's converter baked +1 into the weights: subtract 1 on export, or scan "
                "with --parametrization standard",
            )
        )
    if standard:
        negative = size = 0
        all_zero = True
        for name in standard:
            gain = measured.gains[name]
            negative += int((gain < 0).sum())
            size += gain.size
            all_zero = all_zero and not gain.any()
        flipped = negative / size
        ok = flipped <= MAX_FLIPPED and not all_zero
        what = "all exactly 0" if all_zero else f"{100 * flipped:.2f}% of the channels below 0"
        out.append(
            _finding(
                CheckName.offset,
                "model",
                ok,
                severity,
                flipped,
                f"<= {MAX_FLIPPED:g} negative",
                f"{len(standard)} standard norm(s): {what}"
                + ("" if ok else ": zero-centred (1 + w) weights read without their offset?"),
                "these look like zero-centred weights: scan with --parametrization offset, or "
                "fix the config's zero-centred flag / the converter that dropped the +1",
            )
        )
    return out


def _identical_findings(
    norms: Sequence[NormStats], measured: Measured, severity: Severity
) -> list[Finding]:
    import hashlib  # `check` only: a scan imports this module through the gates

    seen: defaultdict[tuple[str, str], list[NormStats]] = defaultdict(list)
    for n in norms:
        gain = measured.gains.get(n.name)
        if n.layer is None or gain is None or n.identity or gain.size < 2:
            continue
        if (gain == gain[0]).all():  # a constant vector: untrained, not a copy
            continue
        digest = hashlib.sha256(np.ascontiguousarray(gain).tobytes()).hexdigest()
        seen[(f"{n.module.value}:{n.role.value}", digest)].append(n)
    out = []
    for copies in seen.values():
        if len(copies) < 2:
            continue
        layers = ", ".join(str(n.layer) for n in copies)
        out.append(
            _finding(
                CheckName.identical,
                copies[1].name,
                False,
                severity,
                float(len(copies)),
                "distinct",
                f"{copies[0].role.value} norms of layers {layers} are bit-identical "
                f"({copies[0].name}, {copies[1].name}): one layer saved in place of another?",
                "a copy bug in the export or merge: compare the layers with the source checkpoint",
            )
        )
    if not out:
        out.append(
            _finding(
                CheckName.identical,
                "model",
                True,
                severity,
                0.0,
                "distinct",
                "no two layers hold bit-identical trained norms",
                None,
            )
        )
    return out


def _declared_finding(measured: Measured, severity: Severity) -> Finding:
    declared, found = measured.declared_mtp, measured.report.model.mtp_depth
    ok = found >= declared
    return _finding(
        CheckName.mtp_declared,
        "model",
        ok,
        severity,
        float(found),
        f">= {declared}",
        f"MTP depths: the config declares {declared}, the checkpoint holds norms of {found}",
        "the MTP weights are missing: Hugging Face re-saves drop them "
        "(_keys_to_ignore_on_load_unexpected); export from the training framework",
    )


def _dtype_finding(measured: Measured, severity: Severity) -> Finding:
    norm_types = Counter(measured.norm_dtypes)
    others = Counter(dict(measured.other_dtypes))
    if not norm_types or not others:
        return _finding(
            CheckName.norm_dtype,
            "model",
            True,
            severity,
            None,
            "no narrower",
            "no other floating tensors to compare the norms' dtype with",
            None,
        )
    dominant = others.most_common(1)[0][0]
    narrowest = min(norm_types, key=lambda d: MANTISSA_BITS[d])
    ok = MANTISSA_BITS[narrowest] >= MANTISSA_BITS[dominant]
    return _finding(
        CheckName.norm_dtype,
        "model",
        ok,
        severity,
        float(MANTISSA_BITS[narrowest]),
        f">= {MANTISSA_BITS[dominant]} mantissa bits",
        f"norms stored as {'/'.join(sorted(norm_types))}, the other floating tensors mostly "
        f"{dominant}" + ("" if ok else f": {narrowest} keeps fewer mantissa bits"),
        f"store the norms as {dominant} (or wider): a converter cast them down",
    )


_MTP_ROLES = (Role.mtp_embedding, Role.mtp_hidden, Role.mtp_final)


def mtp_finding(
    norms: Sequence[NormStats], depth: int, expected: int, severity: Severity
) -> Finding:
    """`--expect-mtp N`: N MTP depths, each with its embedding, hidden and final norms."""
    missing = []
    # Qwen3-Next/3.5 share one set of embedding/hidden/final norms across depths.
    shared = {n.role for n in norms if n.module is Module.mtp and n.mtp_depth == 1}
    for k in range(1, expected + 1):
        have = {n.role for n in norms if n.module is Module.mtp and n.mtp_depth == k}
        lacking = [r.value for r in _MTP_ROLES if r not in have and r not in shared]
        if lacking or not have:
            missing.append(f"depth {k}: " + (", ".join(lacking) if lacking else "no norms"))
    ok = depth == expected and not missing
    message = f"MTP depth {depth}" + ("" if ok else f", expected {expected}")
    if missing:
        message += " (missing " + "; ".join(missing) + ")"
    return Finding(
        check=CheckName.mtp,
        subject="model",
        passed=ok,
        severity=severity,
        value=float(depth),
        limit=f"== {expected}",
        message=message,
        fix=None
        if ok
        else "the MTP weights are not in this checkpoint: Hugging Face re-saves drop "
        "them (_keys_to_ignore_on_load_unexpected); export from the training framework instead",
    )
