"""Presenters: the one difference tree rendered as text, JSON, HTML and markdown.

Like diffoscope's presenters, none of these knows how the tree was made. Text and
markdown are summaries (the first `limit` differing paths, the rest counted, long
diffs cut); JSON and HTML carry the whole tree.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from repro import oci
from repro.diff._causes import UNCLASSIFIED
from repro.diff._tree import Cause, Difference, DiffReport
from repro.errors import InputError

TEXT_DIFF_LINES = 30


def _causes_text(causes: list[Cause]) -> str:
    """Cause ids; a difference no rule explains says what is known about it instead."""
    if not causes:
        return "no cause recognised"
    return ", ".join(c.id if c.id != UNCLASSIFIED else f"{c.id}: {c.title}" for c in causes)


def _fix_lines(cause: Cause, pad: str = "    ") -> list[str]:
    """`fix:` first with the repro setting when there is one, then the build change."""
    fixes = cause.fixes()
    if cause.id == UNCLASSIFIED:
        return [f"{pad}closest hint: {fixes[0]}"]
    out = [f"{pad}fix: {fixes[0]}"]
    out += [f"{pad}  or {f}" for f in fixes[1:]]
    return out


def _short(digest: str) -> str:
    return oci.short_digest(digest) if digest and ":" in digest else digest


def shown_name(path: str) -> str:
    """A path from a layer as one printable line: control characters, and bytes that
    were not UTF-8, escaped (a layer must not be able to forge report lines)."""
    if path.isprintable():
        return path
    out = []
    for ch in path:
        if ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # surrogateescape'd byte
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _title(node: Difference) -> str:
    """`layer 1 sha256:aaaa… -> sha256:bbbb…`: what both sides are, digests shortened."""
    a = " ".join(_short(w) for w in node.source1.split(" "))
    b = " ".join(_short(w) for w in node.source2.split(" "))
    if not a or not b or a == b:
        return a or b
    common = os.path.commonprefix([a, b])
    common = common[: common.rfind(" ") + 1] if " " in common else ""
    return f"{common}{a[len(common) :]} -> {b[len(common) :]}"


def text(report: DiffReport, limit: int = 40, diff_lines: int = TEXT_DIFF_LINES) -> str:
    out: list[str] = []
    out.append(
        f"{report.source1} ({_short(report.digest1)}) vs {report.source2} "
        f"({_short(report.digest2)}): {report.verdict}"
    )
    for p in report.platforms:
        layers = (
            f" (layers {', '.join(map(str, p.differing_layers))})" if p.differing_layers else ""
        )
        out.append(f"  {p.platform}: {p.verdict}{layers}")
    if report.tree is None:
        return "\n".join(out) + "\n"
    shown = 0
    hidden = 0

    def emit(node: Difference, depth: int) -> None:
        nonlocal shown, hidden
        pad = "  " * depth
        if node.kind == "path":
            if shown >= limit:
                hidden += 1
                return
            shown += 1
            name = shown_name(node.path or "")
            out.append(f"{pad}{name}: {node.comment}  [{_causes_text(node.causes)}]")
        elif node.kind == "diffoscope":
            if node.unified_diff:
                lines = node.unified_diff.splitlines()
                out.append(
                    f"{pad}diffoscope: {shown_name(node.source1) or '(file)'}"
                    + (f" ({node.comment})" if node.comment else "")
                )
                for line in lines[:diff_lines]:
                    out.append(f"{pad}  {line}")
                if len(lines) > diff_lines:
                    out.append(
                        f"{pad}  ... {len(lines) - diff_lines} more lines (see --report-dir)"
                    )
            elif node.comment:
                out.append(f"{pad}diffoscope: {shown_name(node.source1)}: {node.comment}")
            for child in node.details:
                emit(child, depth + 1)
            return
        elif node.kind == "image":
            if node.comment:
                out.append(f"{pad}{node.comment}")
        else:
            title = _title(node)
            line = f"{pad}{node.kind} {title}" if node.kind not in title else f"{pad}{title}"
            if node.comment:
                line += f": {node.comment}"
            if node.causes:
                line += f"  [{_causes_text(node.causes)}]"
            out.append(line)
            if node.kind in ("config", "manifest", "index") and node.unified_diff:
                lines = node.unified_diff.splitlines()[2:]
                for dl in lines[:diff_lines]:
                    out.append(f"{pad}  {dl}")
        for child in node.details:
            emit(child, depth + 1)

    for child in report.tree.details:
        emit(child, 1)
    if report.tree.comment:
        out.append(f"  {report.tree.comment}")
    if hidden:
        out.append(f"  ... and {hidden} more differing paths (see --json or --report-dir)")
    causes = report.causes()
    if causes:
        out.append("causes and fixes:")
        for c in causes:
            out.append(f"  {c.id}: {c.title}")
            out += _fix_lines(c)
    return "\n".join(out) + "\n"


def to_json(report: DiffReport) -> str:
    return json.dumps(report.to_json(), indent=2)


def markdown(report: DiffReport, title: str = "", limit: int = 40) -> str:
    esc = _md
    out = [f"### {esc(title or 'repro diff')}: {report.verdict}", ""]
    out.append("| platform | verdict | first | second |")
    out.append("|---|---|---|---|")
    for p in report.platforms:
        out.append(
            f"| {esc(p.platform)} | {p.verdict} "
            f"| `{_short(p.digest1 or '')}` | `{_short(p.digest2 or '')}` |"
        )
    if report.findings:
        out += ["", "| path | layer | what differs | cause |", "|---|---|---|---|"]
        for f in report.findings[:limit]:
            out.append(
                f"| `{esc(shown_name(f.path))}` | {f.layer} | {esc(', '.join(f.changes))} "
                f"| {esc(_causes_text(f.causes))} |"
            )
        if len(report.findings) > limit:
            out.append(f"\n... and {len(report.findings) - limit} more paths")
    causes = report.causes()
    if causes:
        out += ["", "**Fixes**", ""]
        out += [f"- **{c.id}** ({esc(c.title)}): " + esc("; or ".join(c.fixes())) for c in causes]
    return "\n".join(out) + "\n"


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


_CSS = """
body{font-family:sans-serif;margin:1.5em} .cause{color:#a40} .kind{color:#555;font-size:.85em}
details{margin-left:1.2em;border-left:1px solid #ccc;padding-left:.6em}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto}
.add{color:#060} .del{color:#a00} table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:2px 6px}
"""


def _html_diff(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        cls = "add" if line.startswith("+") else "del" if line.startswith("-") else ""
        lines.append(
            f'<span class="{cls}">{html.escape(line)}</span>' if cls else html.escape(line)
        )
    return "<pre>" + "\n".join(lines) + "</pre>"


def _html_node(node: Difference) -> str:
    title = html.escape(shown_name(node.path or node.source2 or node.source1))
    bits = [f'<span class="kind">{node.kind}</span> {title}']
    if node.comment:
        bits.append(html.escape(node.comment))
    if node.causes:
        bits.append(
            '<span class="cause">'
            + ", ".join(
                f'<span title="{html.escape(c.fix)}">{html.escape(_causes_text([c]))}</span>'
                for c in node.causes
            )
            + "</span>"
        )
    body = ""
    if node.unified_diff:
        body += _html_diff(node.unified_diff)
    body += "".join(_html_node(child) for child in node.details)
    return f"<details open><summary>{' — '.join(bits)}</summary>{body}</details>"


def html_report(report: DiffReport, title: str = "", preamble: str = "") -> str:
    """The whole tree as one self-contained page; `preamble` is trusted HTML put
    before the platform table (verify's list of builds)."""
    rows = "".join(
        f"<tr><td>{html.escape(p.platform)}</td><td>{p.verdict}</td>"
        f"<td><code>{html.escape(p.digest1 or '')}</code></td>"
        f"<td><code>{html.escape(p.digest2 or '')}</code></td></tr>"
        for p in report.platforms
    )
    causes = "".join(
        f"<li><b>{html.escape(c.id)}</b>: {html.escape(c.title)}"
        + "".join(
            f"<br>{'fix' if n == 0 else 'or'}: {html.escape(f)}" for n, f in enumerate(c.fixes())
        )
        + "</li>"
        for c in report.causes()
    )
    tree = (
        "".join(_html_node(c) for c in report.tree.details) if report.tree else "<p>identical</p>"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title or 'repro diff')}: {report.verdict}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title or 'repro diff')}: {report.verdict}</h1>"
        f"<p>{html.escape(report.source1)} vs {html.escape(report.source2)}</p>{preamble}"
        f"<table><tr><th>platform</th><th>verdict</th><th>first</th><th>second</th></tr>{rows}</table>"
        f"{'<h2>Causes and fixes</h2><ul>' + causes + '</ul>' if causes else ''}"
        f"<h2>Differences</h2>{tree}</body></html>\n"
    )


def write_report_dir(
    report: DiffReport,
    directory: Path,
    title: str = "",
    *,
    summary: str | None = None,
    summary_md: str | None = None,
    preamble: str = "",
    extra_json: dict[str, object] | None = None,
) -> list[Path]:
    """report.html, report.json, summary.txt and summary.md, written atomically.

    verify passes its own summaries, the HTML list of its builds and its result's
    JSON (added as "verify" beside the diff's keys), so one directory holds the
    whole evidence either way."""
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--report-dir {directory}: exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = e.strerror or e
        raise InputError(f"--report-dir {directory}: cannot create it ({reason})") from None
    doc: dict[str, object] = report.to_json()
    if extra_json:
        doc = {**doc, **extra_json}
    files = {
        "report.html": html_report(report, title, preamble),
        "report.json": json.dumps(doc, indent=2) + "\n",
        "summary.txt": summary if summary is not None else text(report),
        "summary.md": summary_md if summary_md is not None else markdown(report, title),
    }
    written = []
    for name, content in files.items():
        path = directory / name
        oci.atomic_write_bytes(path, content.encode())
        written.append(path)
    return written
