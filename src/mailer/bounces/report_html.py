"""The report as a page (HTML with inline SVG charts, no JavaScript), as CSV, and as text.

The charts are drawn here as SVG: ``role="img"`` with a ``<title>`` and a ``<desc>`` that
states the data in words, and the same numbers follow in a table, so a screen reader user
gets everything a sighted one does. Colours come from the newsletter's brand.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from mailer.bounces.report import Outcomes, SendReport, nice_ceiling
from mailer.config import Settings
from mailer.formats import local_time

_INK = "#1f2933"
_GRID = "#6b7280"


def _env() -> Environment:
    return Environment(
        loader=PackageLoader("mailer.bounces", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _clock(moment: dt.datetime, tz: ZoneInfo, width: int) -> str:
    local = moment.astimezone(tz)
    return local.strftime("%d %b %H:%M" if width >= 3600 else "%H:%M:%S" if width < 60 else "%H:%M")


def timeline_svg(report: SendReport, tz: ZoneInfo, colour: str) -> Markup:
    """Copies accepted per interval: vertical bars, the busiest interval sets the scale."""
    bars = report.timeline
    width, height, left, bottom, top = 640, 240, 48, 40, 16
    plot_w, plot_h = width - left - 16, height - bottom - top
    peak = nice_ceiling(max((n for _, n in bars), default=0))
    step = plot_w / max(len(bars), 1)
    unit = _unit(report.bucket_seconds)
    total = sum(n for _, n in bars)
    busiest = max(bars, key=lambda b: b[1]) if bars else None
    desc = f"{total} copies accepted in {len(bars)} intervals of {unit}" + (
        f"; the busiest, starting {_clock(busiest[0], tz, report.bucket_seconds)}, "
        f"had {busiest[1]}."
        if busiest
        else "."
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        'aria-labelledby="timeline-title timeline-desc" class="chart">',
        f'<title id="timeline-title">Copies accepted per {escape(unit)}</title>',
        f'<desc id="timeline-desc">{escape(desc)}</desc>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        f'stroke="{_GRID}"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" fill="{_INK}" '
        f'font-size="12">{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" fill="{_INK}" '
        'font-size="12">0</text>',
    ]
    bar = min(step * 0.8, 48.0)
    for i, (_, n) in enumerate(bars):
        h = plot_h * n / peak if peak else 0
        x = left + i * step + (step - bar) / 2
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
            f'height="{h:.1f}" fill="{escape(colour)}"/>'
        )
    labels = sorted({0, len(bars) // 2, len(bars) - 1}) if bars else []
    for i in labels:
        x = left + i * step + step / 2
        parts.append(
            f'<text x="{x:.1f}" y="{height - 14}" text-anchor="middle" fill="{_INK}" '
            f'font-size="12">{escape(_clock(bars[i][0], tz, report.bucket_seconds))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def reasons_svg(report: SendReport, colour: str) -> Markup:
    """Failures by reason: one horizontal bar per status code, labelled with its meaning."""
    rows = report.reasons
    width, row_h, label_w = 640, 28, 300
    height = max(len(rows), 1) * row_h + 16
    peak = nice_ceiling(max((n for _, _, n in rows), default=0))
    words = "; ".join(f"{meaning} ({code or 'no code'}): {n}" for code, meaning, n in rows)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        'aria-labelledby="reasons-title reasons-desc" class="chart">',
        '<title id="reasons-title">Failures by reason</title>',
        f'<desc id="reasons-desc">{escape(words or "No failures were reported.")}</desc>',
    ]
    for i, (code, meaning, n) in enumerate(rows):
        y = 8 + i * row_h
        w = (width - label_w - 60) * n / peak if peak else 0
        parts += [
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end" fill="{_INK}" '
            f'font-size="13">{escape(meaning)} ({escape(code or "-")})</text>',
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 10}" '
            f'fill="{escape(colour)}"/>',
            f'<text x="{label_w + w + 6:.1f}" y="{y + 17}" fill="{_INK}" font-size="13">{n}</text>',
        ]
    parts.append("</svg>")
    return Markup("".join(parts))


def _unit(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    if seconds < 3600:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = seconds // 3600
    return f"{hours} hour{'s' if hours != 1 else ''}"


def html(report: SendReport, settings: Settings) -> str:
    tz = settings.tz
    return (
        _env()
        .get_template("report.html.j2")
        .render(
            r=report,
            rows=Outcomes.ROWS,
            brand=settings.brand,
            organisation=settings.organisation,
            when=lambda moment: local_time(moment, tz),
            clock=lambda moment: _clock(moment, tz, report.bucket_seconds),
            timeline_chart=timeline_svg(report, tz, settings.brand.primary),
            reasons_chart=reasons_svg(report, settings.brand.primary),
            unit=_unit(report.bucket_seconds),
        )
    )


def csv_text(report: SendReport) -> str:
    """One row per figure: section, group, measure, value (and the people, if asked for)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["section", "group", "measure", "value"])
    writer.writerow(["send", report.slug, "send id", report.send_id])
    writer.writerow(["send", report.slug, "status", report.status])
    writer.writerow(["send", report.slug, "lists", " ".join(report.lists)])
    writer.writerow(["send", report.slug, "duration seconds", _number(report.duration)])
    writer.writerow(["send", report.slug, "messages per second", _number(report.rate)])
    for key, _label in Outcomes.ROWS:
        writer.writerow(["outcomes", "all", key, getattr(report.outcomes, key)])
    for item in report.per_list:
        for key, _label in Outcomes.ROWS:
            writer.writerow(["outcomes", item.slug, key, getattr(item.outcomes, key)])
    for code, meaning, n in report.reasons:
        writer.writerow(["failures by reason", code or "-", meaning, n])
    for start, n in report.timeline:
        writer.writerow(["accepted over time", start.isoformat(), report.bucket_seconds, n])
    for url, n in report.clicks or []:
        writer.writerow(["clicks", url, "clicks", n])
    for person in report.people or []:
        writer.writerow(
            [
                "people",
                person.email,
                person.outcome,
                _cell(f"{person.status} {person.reason}".strip()),
            ]
        )
    return out.getvalue()


# What a remote server said is text from outside: a spreadsheet would run a cell starting
# with one of these as a formula (OWASP "CSV injection"), so it gets a leading apostrophe,
# as in subscribers/csv_export.py.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def text(report: SendReport, settings: Settings) -> list[str]:
    """The summary the command prints."""
    tz = settings.tz
    lines = [
        f"{report.slug}: send {report.send_id} to {', '.join(report.lists) or '-'} "
        f"({report.status}), started {local_time(report.started_at, tz)}",
    ]
    for key, label in Outcomes.ROWS:
        lines.append(f"  {label + ':':<44}{getattr(report.outcomes, key):>8,}")
    if report.duration is not None:
        rate = f", {report.rate:.1f} messages/s" if report.rate else ""
        lines.append(f"  {'Duration:':<44}{report.duration:>8.0f} s{rate}")
    flagged = report.outcomes.policy
    if flagged:
        lines.append(
            f"Flagged: {flagged} cop{'ies were' if flagged != 1 else 'y was'} "
            "refused for policy or reputation (5.7.x): check the sending domain's SPF, DKIM "
            "and DMARC, and the relay's reputation."
        )
    for code, meaning, n in report.reasons:
        lines.append(f"  failure {code or '-':<8} {meaning:<40}{n:>6,}")
    lines += notes(report)
    return lines


def notes(report: SendReport) -> list[str]:
    """What came back since the send that changed nobody, for the operator to look at."""
    found = []
    if report.unverified:
        found.append(
            f"Unverified: {report.unverified} report(s) since the send named no copy mailer "
            "signed and changed nobody: see mailer bounces list --unverified."
        )
    if report.quarantined:
        found.append(
            f"Quarantined: {report.quarantined} message(s) since the send could not be read: "
            "see mailer bounces list --quarantined."
        )
    return found
