"""Renderers of `normscope check`: text for people, JSON, JUnit XML, HTML and GitHub workflow
commands, and `CheckView`, which holds them together for the command line."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from normscope.enums import CheckName, Severity, Verdict
from normscope.render import html
from normscope.render.common import for_people, render_json
from normscope.schema import CheckReport, Finding


def _violations(result: CheckReport) -> list[Finding]:
    return [f for f in result.findings if not f.passed]


def verdict_line(result: CheckReport) -> str:
    """One line a tired engineer understands at 3 a.m."""
    checks = sorted({f.check.value for f in result.findings})
    norms = len({f.subject for f in result.findings if f.subject != "model"})
    if result.verdict is Verdict.passed:
        head = "PASS"
        tail = f", {result.warned} warning(s)" if result.warned else ""
    else:
        head = "FAIL"
        tail = f": {result.errors} error(s), {result.warned} warning(s)"
    return f"{head}{tail} ({norms} norms, checks: {', '.join(checks)}) {result.source}"


@for_people
def render_check_text(result: CheckReport, color: bool = False) -> str:
    """One line per violation grouped by check, with value, limit and fix; then the verdict."""
    lines: list[str] = []
    red, yellow, bold, end = (
        ("[bold red]", "[yellow]", "[bold]", "[/]") if color else ("", "", "", "")
    )
    for check in CheckName:
        failed = [f for f in _violations(result) if f.check is check]
        if not failed:
            continue
        lines.append(f"{bold}{check.value}{end}: {len(failed)} violation(s)")
        # Violations sharing a fix are listed together and the fix is said once.
        by_fix: dict[str | None, list[Finding]] = {}
        for f in failed:
            by_fix.setdefault(f.fix, []).append(f)
        for fix, group in by_fix.items():
            for f in group:
                style = red if f.severity is Severity.error else yellow
                mark = "error" if f.severity is Severity.error else "warn"
                lines.append(f"  {style}{mark}{end} {f.subject}: {f.message} [limit {f.limit}]")
            if fix:
                lines.append(f"    fix: {fix}")
    verdict = verdict_line(result)
    if color:
        verdict = (red if result.verdict is Verdict.failed else "[bold green]") + verdict + end
    lines.append(verdict)
    return "\n".join(lines) + "\n"


@for_people
def render_junit(result: CheckReport) -> str:
    """JUnit XML: one testsuite per check, one testcase per (check, subject)."""
    root = ET.Element(
        "testsuites", name="normscope", tests=str(len(result.findings)), failures=str(result.errors)
    )
    for check in CheckName:
        findings = [f for f in result.findings if f.check is check]
        if not findings:
            continue
        failures = sum(1 for f in findings if not f.passed and f.severity is Severity.error)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"normscope.{check.value}",
            tests=str(len(findings)),
            failures=str(failures),
            errors="0",
            skipped="0",
        )
        for f in findings:
            case = ET.SubElement(
                suite, "testcase", classname=f"normscope.{check.value}", name=f.subject
            )
            text = f"{f.message} [limit {f.limit}]" + (f"\nfix: {f.fix}" if f.fix else "")
            if not f.passed and f.severity is Severity.error:
                failure = ET.SubElement(case, "failure", message=f.message, type=check.value)
                failure.text = text
            elif not f.passed:
                ET.SubElement(case, "system-out").text = "WARNING: " + text
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _escape_data(text: str) -> str:
    # GitHub workflow-command escaping (actions/toolkit core/src/command.ts escapeData).
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    # ... and escapeProperty, for title=...
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


@for_people
def render_github(result: CheckReport) -> str:
    """`::error`/`::warning` workflow commands, one per violation, and a closing notice."""
    lines = []
    for f in _violations(result):
        level = "error" if f.severity is Severity.error else "warning"
        title = _escape_property(f"normscope {f.check.value}: {f.subject}")
        body = f"{f.message} [limit {f.limit}]" + (f" Fix: {f.fix}" if f.fix else "")
        lines.append(f"::{level} title={title}::{_escape_data(body)}")
    level = "error" if result.verdict is Verdict.failed else "notice"
    lines.append(f"::{level} title=normscope check::{_escape_data(verdict_line(result))}")
    return "\n".join(lines) + "\n"


@for_people(markdown=True)
def render_step_summary(result: CheckReport) -> str:
    """Markdown for $GITHUB_STEP_SUMMARY."""
    icon = "✅" if result.verdict is Verdict.passed else "❌"
    lines = [
        f"### {icon} normscope check: {result.verdict.value.upper()}",
        "",
        f"`{result.source}`" + (f" against `{result.baseline}`" if result.baseline else ""),
        "",
    ]
    violations: Sequence[Finding] = _violations(result)
    if violations:
        lines += [
            "| check | severity | norm | finding | limit | fix |",
            "|---|---|---|---|---|---|",
        ]
        for f in violations:
            lines.append(
                f"| {f.check.value} | {f.severity.value} | `{f.subject}` | "
                f"{f.message} | {f.limit} | {f.fix or ''} |"
            )
    else:
        lines.append(f"All {len(result.findings)} findings passed.")
    return "\n".join(lines) + "\n"


# --- HTML ---------------------------------------------------------------------------------------


@for_people
def render_check_html(result: CheckReport) -> str:
    rows = [
        [
            html.text(f.check.value),
            html.text(f.subject, "name"),
            html.text(
                "pass" if f.passed else "FAIL",
                "" if f.passed else ("fail-error" if f.severity is Severity.error else "fail-warn"),
            ),
            html.text(f.severity.value),
            html.num(f.value, 4),
            html.text(f.limit, "wrap"),
            html.text(f.message, "wrap"),
            html.text(f.fix or "", "prose"),
        ]
        for f in sorted(result.findings, key=lambda f: f.passed)
    ]
    head = [("verdict", verdict_line(result)), ("source", result.source)]
    if result.baseline:
        head.append(("baseline", result.baseline))
    sections = [
        html.table(
            "findings",
            f"findings ({len(result.findings)}; violations first)",
            ["check", "subject", "result", "severity", "value", "limit", "finding", "fix"],
            rows,
        ),
    ]
    sections += html.warnings_section(result.warnings)
    return html.page(f"normscope check {result.normscope_version}", head, sections)


@dataclass(frozen=True, slots=True)
class CheckView:
    """A check report in each of its formats (`cli/gate.render_check` picks one)."""

    report: CheckReport

    def verdict(self) -> str:
        return verdict_line(self.report)

    def text(self, colour: bool = False) -> str:
        return render_check_text(self.report, colour)

    def json(self) -> str:
        return render_json(self.report)

    def junit(self) -> str:
        return render_junit(self.report)

    def html(self) -> str:
        return render_check_html(self.report)

    def github(self) -> str:
        return render_github(self.report)

    def step_summary(self) -> str:
        return render_step_summary(self.report)
