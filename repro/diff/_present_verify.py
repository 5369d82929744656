"""Presenters of verify results: text, GitHub annotations and step summary, and the
report directory; over the same difference tree as ``repro diff``'s presenters.

Builds are named "build 1" and "build 2" with their digests, never by the
temporary paths they were built in, so a report stays true after verify ends.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from repro.diff import _present as present

if TYPE_CHECKING:
    from repro.verify import VerifyResult


def _builds(result: VerifyResult) -> list[tuple[str, str]]:
    return [("build 1", result.digest1), ("build 2", result.digest2)]


def text(result: VerifyResult, accept: str, limit: int = 40) -> str:
    """What `repro verify` prints for one recipe."""
    mark = "reproducible" if result.reproducible(accept) else "NOT reproducible"
    lines = [
        f"{result.recipe}: {mark} ({result.verdict}) {result.digest1}"
        + ("" if result.digest1 == result.digest2 else f" vs {result.digest2}")
        + f"  ({result.seconds:.1f}s)"
    ]
    if result.variations:
        lines.append(f"  variations: {', '.join(result.variations)}")
    else:
        lines.append("  variations: none")
    first = result.sides[0] if result.sides else None
    if first is not None and first.reused and first.result is not None:
        where = first.result.output.partition(":")[2]
        lines.append(
            f"  build 1: the image repro build wrote to {where} from the same inputs, "
            "not built again; build 2 from scratch (--no-cache: both)"
        )
    elif first is not None and first.cache and first.cached_steps:
        lines.append(
            f"  build 1: {first.cached_steps} step{'s' * (first.cached_steps != 1)} "
            "from BuildKit's cache; build 2 from scratch (--no-cache: both)"
        )
    if result.bisect:
        lines.append("  bisect: " + ", ".join(f"{k}: {v}" for k, v in result.bisect.items()))
        culprits = result.culprits()
        if culprits:
            lines.append(f"  caused by: {', '.join(culprits)}")
    out = "\n".join(lines) + "\n"
    if result.report is not None and not result.report.identical:
        body = present.text(result.report, limit=limit)
        out += "".join("  " + line + "\n" for line in body.splitlines()[1:])
    return out


def _escape_command(message: str) -> str:
    # Workflow commands end at the newline; % and newlines must be escaped.
    return message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_annotations(results: Sequence[VerifyResult], accept: str) -> list[str]:
    """One ::error line per recipe that is not reproducible."""
    out = []
    for result in results:
        if result.reproducible(accept):
            continue
        files = []
        if result.report is not None:
            for f in result.report.findings[:5]:
                causes = ",".join(c.id for c in f.causes) or "unclassified"
                files.append(f"{present.shown_name(f.path)} ({causes})")
        what = "; ".join(files) or result.verdict
        message = _escape_command(f"{result.recipe} is not reproducible: {what}")
        out.append(f"::error title=repro verify {result.recipe}::{message}")
    return out


def step_summary(results: Sequence[VerifyResult], accept: str) -> str:
    """The markdown appended to $GITHUB_STEP_SUMMARY."""
    summary = [
        "## repro verify",
        "",
        "| recipe | verdict | reproducible | build 1 | build 2 | seconds |",
        "|---|---|---|---|---|---|",
    ]
    details = []
    for result in results:
        ok = result.reproducible(accept)
        summary.append(
            f"| {result.recipe} | {result.verdict} | {'yes' if ok else '**no**'} "
            f"| `{result.digest1}` | `{result.digest2}` | {result.seconds:.1f} |"
        )
        if not ok and result.report is not None:
            details.append(present.markdown(result.report, f"{result.recipe}"))
    return "\n".join(summary) + "\n\n" + "\n".join(details)


def _preamble(result: VerifyResult, accept: str) -> str:
    rows = "".join(
        f"<tr><td>{name}</td><td><code>{html.escape(digest)}</code></td></tr>"
        for name, digest in _builds(result)
    )
    mark = "reproducible" if result.reproducible(accept) else "NOT reproducible"
    variations = ", ".join(result.variations) or "none"
    return (
        f"<p class='verdict'>{html.escape(result.recipe)}: {mark}</p>"
        f"<table><tr><th>build</th><th>digest</th></tr>{rows}</table>"
        f"<p>variations of build 2: {html.escape(variations)}</p>"
    )


def _without_paths(doc: dict[str, object]) -> dict[str, object]:
    """The result without the temporary directories the builds ran in."""
    builds = doc.get("builds")
    if isinstance(builds, list):
        doc = {
            **doc,
            "builds": [
                {k: v for k, v in b.items() if k != "directory"} if isinstance(b, dict) else b
                for b in builds
            ],
        }
    return doc


def write_verify_report(result: VerifyResult, directory: Path, accept: str) -> list[Path]:
    """The report directory of one recipe, identical or not."""
    assert result.report is not None
    title = f"repro verify {result.recipe}"
    summary = "".join(f"{name}: {digest}\n" for name, digest in _builds(result))
    summary += text(result, accept, limit=10**9)
    md = f"### {title}\n\n" + "\n".join(f"- {name}: `{digest}`" for name, digest in _builds(result))
    md += f"\n- variations of build 2: {', '.join(result.variations) or 'none'}\n\n"
    md += present.markdown(result.report, title)
    return present.write_report_dir(
        result.report,
        directory,
        title,
        summary=summary,
        summary_md=md,
        preamble=_preamble(result, accept),
        extra_json={"verify": _without_paths(result.to_json(accept))},
    )
