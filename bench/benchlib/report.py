"""Medians and spreads of the runs, the markdown report and the SVG chart."""

import shlex
import statistics
from html import escape

ORDER = ("rondo", "nginx", "HAProxy")
COLORS = {"rondo": "#d95f02", "nginx": "#1b9e77", "HAProxy": "#7570b3"}


def spread(values):
    """(median, min, max) of `values`; None for an empty list."""
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def _fmt(x, digits):
    return f"{x:,.{digits}f}"


def _cell(values, digits, with_spread=True):
    s = spread(values)
    if s is None:
        return "–"
    med, lo, hi = s
    if not with_spread or len(values) == 1:
        return _fmt(med, digits)
    return f"{_fmt(med, digits)} ({_fmt(lo, digits)}–{_fmt(hi, digits)})"


def median_of(results, sid, name, key):
    runs = results.get(sid, {}).get(name, [])
    s = spread([r[key] for r in runs if key in r])
    return None if s is None else s[0]


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def _ratio_cell(r):
    return "–" if r is None else f"{r:.2f}"


def balancers_of(results, sid):
    return [n for n in ORDER if n in results.get(sid, {})]


def load_table(results, scenarios):
    lines = [
        "| Scenario | Balancer | Requests/s | p50 ms | p99 ms | CPU µs/request | Peak RSS MiB | Errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for sc in scenarios:
        if sc.kind == "idle" or sc.id not in results:
            continue
        for name in balancers_of(results, sc.id):
            runs = results[sc.id][name]
            lines.append(
                f"| {sc.id}. {sc.describe()} | {name} "
                f"| {_cell([r['rps'] for r in runs], 0)} "
                f"| {_cell([r['p50_ms'] for r in runs], 2)} "
                f"| {_cell([r['p99_ms'] for r in runs], 2)} "
                f"| {_cell([r['cpu_us'] for r in runs], 1)} "
                f"| {_cell([r['rss_kib'] / 1024 for r in runs], 1)} "
                f"| {sum(r['errors'] for r in runs)} |"
            )
    return "\n".join(lines)


def idle_table(results, scenarios):
    lines = []
    for sc in scenarios:
        if sc.kind != "idle" or sc.id not in results:
            continue
        n = sc.idle_connections
        lines += [
            f"| Scenario | Balancer | RSS before MiB | RSS with {n:,} idle MiB | KiB per connection "
            f"| PSS with {n:,} idle MiB | Seconds to open them | Still open when measured |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name in balancers_of(results, sc.id):
            runs = results[sc.id][name]
            per_conn = [(r["rss_kib"] - r["base_kib"]) / n for r in runs]
            lines.append(
                f"| {sc.id}. {sc.describe()} | {name} "
                f"| {_cell([r['base_kib'] / 1024 for r in runs], 1)} "
                f"| {_cell([r['rss_kib'] / 1024 for r in runs], 1)} "
                f"| {_cell(per_conn, 2)} "
                f"| {_cell([r['pss_kib'] / 1024 for r in runs], 1)} "
                f"| {_cell([r['open_s'] for r in runs if 'open_s' in r], 1)} "
                f"| {_cell([r['open'] for r in runs], 0)} of {n:,} |"
            )
    return "\n".join(lines)


def ratio_table(results, scenarios):
    lines = [
        "| Scenario | Requests/s rondo/nginx | p99 rondo/nginx | CPU/request rondo/nginx "
        "| RSS rondo/nginx | Requests/s rondo/HAProxy | p99 rondo/HAProxy "
        "| CPU/request rondo/HAProxy | RSS rondo/HAProxy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sc in scenarios:
        if sc.id not in results:
            continue
        cells = []
        for other in ("nginx", "HAProxy"):
            for key in ("rps", "p99_ms", "cpu_us", "rss_kib"):
                cells.append(
                    _ratio_cell(
                        _ratio(
                            median_of(results, sc.id, "rondo", key),
                            median_of(results, sc.id, other, key),
                        )
                    )
                )
        lines.append(f"| {sc.id}. {sc.describe()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results, scenarios):
    """[(target, rondo/nginx ratio or None, met or None)] for the targets of issue 6."""
    out = []

    def add(text, sid, key, limit, at_least=False):
        r = _ratio(
            median_of(results, sid, "rondo", key), median_of(results, sid, "nginx", key)
        )
        met = None if r is None else (r >= limit if at_least else r <= limit)
        out.append((text, r, met))

    ids = [sc.id for sc in scenarios if sc.id in results]
    if 1 in ids:
        add("1: CPU time per request at most 0.75 × nginx's", 1, "cpu_us", 0.75)
    for sid in ids:
        if sid != 6:
            add(f"{sid}: CPU time per request at most nginx's", sid, "cpu_us", 1.0)
    for sid in ids:
        if sid <= 5 and sid != 6:
            add(f"{sid}: p99 at most nginx's", sid, "p99_ms", 1.0)
    for sid in ids:
        if sid != 6:
            add(f"{sid}: requests/s at least nginx's", sid, "rps", 1.0, at_least=True)
    if 6 in ids:
        add("6: RSS with the idle client connections at most nginx's", 6, "rss_kib", 1.0)
    return out


def targets_table(results, scenarios):
    lines = ["| Target | rondo/nginx | Met |", "|---|---:|:---:|"]
    for text, r, met in targets(results, scenarios):
        mark = "–" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {text} | {_ratio_cell(r)} | {mark} |")
    return "\n".join(lines)


def markdown(results, scenarios, commands, meta):
    """The whole results.md."""
    ran = [sc for sc in scenarios if sc.id in results]
    parts = [
        "# rondo, nginx and HAProxy side by side",
        "",
        "Generated by `bench/run` (issue 6). Every figure comes from the run described here; "
        "ratios are rondo's median over the other's median from the same run.",
        "",
        "## The run",
        "",
        "```sh",
        meta["command"],
        "```",
        "",
        f"- Date: {meta['date']}",
        f"- Machine: {meta['nproc']} cores ({meta['cpu']}), {meta['memory']}, Linux {meta['kernel']}",
        f"- Versions: {meta['versions']}",
        f"- Rounds: {meta['rounds']}, {meta['duration']} s per run after a {meta['warmup']} s "
        f"warm-up per balancer; order rondo, nginx, HAProxy in every round.",
        f"- Balancers: {meta['workers']} workers/threads each; {meta['settings']}",
        "",
        "Each load run is `wrk` on 127.0.0.1 (2 threads); wrk, the backends and the balancer share "
        "the machine's cores, so requests/s is what the whole machine managed and depends on how "
        "much CPU each balancer leaves to the others. CPU µs/request is the balancer's own "
        "processes only (utime + stime from /proc of the process and all its descendants, "
        "before and after the run, divided by the requests wrk completed). Peak RSS is the "
        "largest sum of VmRSS over those processes, sampled every 0.2 s during the run "
        "(nginx's master and workers share pages, which the sum counts once per process; PSS, "
        "which does not, is in the idle-connections table). Figures are medians with the "
        "min–max over the rounds in parentheses.",
        "",
    ]
    if any(sc.kind != "idle" for sc in ran):
        parts += ["## Load", "", load_table(results, ran), ""]
    idle = idle_table(results, ran)
    if idle:
        parts += ["## Idle client connections", "", idle, ""]
    parts += [
        "## Ratios",
        "",
        ratio_table(results, ran),
        "",
        "## Targets of issue 6",
        "",
        targets_table(results, ran),
        "",
        "## Commands per scenario",
        "",
    ]
    for sc in ran:
        command = commands.get(sc.id, "")
        if not isinstance(command, str):  # results.json of an older run: a list of arguments
            command = command[0] if len(command) == 1 else shlex.join(command)
        parts.append(f"- {sc.id}. {sc.describe()}: `{command}`")
    parts.append("")
    parts.append("The port is the balancer's (a free one, picked per run).")
    parts += ["", "## Notes", ""]
    parts += [f"- {n}" for n in meta["notes"]]
    parts += ["", "![chart](chart.svg)", ""]
    return "\n".join(parts)


def svg(results, scenarios, title):
    """A grouped bar chart (one panel per measure, one group per scenario, one bar per
    balancer: the median, with a line for the min–max)."""
    ran = [sc for sc in scenarios if sc.id in results]
    load = [sc for sc in ran if sc.kind != "idle"]
    panels = [
        ("Requests/s (higher is better)", load, "rps", 1.0),
        ("CPU µs per request (lower is better)", load, "cpu_us", 1.0),
        ("p99 latency, ms (lower is better)", load, "p99_ms", 1.0),
        ("Peak RSS, MiB (6: with the idle connections; lower is better)", ran, "rss_kib", 1 / 1024),
    ]
    width, panel_h, top = 880, 230, 60
    height = top + len(panels) * (panel_h + 50) + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="16">{escape(title)}</text>',
    ]
    x = 70
    for name in ORDER:
        out.append(f'<rect x="{x}" y="36" width="12" height="12" fill="{COLORS[name]}"/>')
        out.append(f'<text x="{x + 16}" y="46">{name}</text>')
        x += 90
    left, right = 70, width - 20
    for i, (label, scs, key, scale) in enumerate(panels):
        y0 = top + i * (panel_h + 50) + 20
        base = y0 + panel_h
        out.append(f'<text x="{left}" y="{y0 - 4}" font-weight="bold">{escape(label)}</text>')
        values = [
            r[key] * scale
            for sc in scs
            for name in balancers_of(results, sc.id)
            for r in results[sc.id][name]
        ]
        vmax = max(values) if values else 1.0
        vmax = vmax * 1.1 or 1.0
        for frac in (0, 0.25, 0.5, 0.75, 1.0):
            y = base - frac * (panel_h - 10)
            out.append(
                f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#ddd"/>'
            )
            out.append(
                f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                f"{_short(frac * vmax)}</text>"
            )
        group_w = (right - left) / max(len(scs), 1)
        bar_w = min(36, group_w / 4)
        for g, sc in enumerate(scs):
            gx = left + g * group_w + (group_w - 3 * bar_w) / 2
            for b, name in enumerate(ORDER):
                runs = results[sc.id].get(name)
                if not runs:
                    continue
                med, lo, hi = spread([r[key] * scale for r in runs])
                h = med / vmax * (panel_h - 10)
                bx = gx + b * bar_w
                out.append(
                    f'<rect x="{bx:.1f}" y="{base - h:.1f}" width="{bar_w - 2:.1f}" '
                    f'height="{h:.1f}" fill="{COLORS[name]}"><title>{name}, scenario {sc.id}: '
                    f"{med:,.2f} ({lo:,.2f}–{hi:,.2f})</title></rect>"
                )
                if hi > lo:
                    cx = bx + (bar_w - 2) / 2
                    ylo = base - lo / vmax * (panel_h - 10)
                    yhi = base - hi / vmax * (panel_h - 10)
                    out.append(
                        f'<line x1="{cx:.1f}" y1="{ylo:.1f}" x2="{cx:.1f}" y2="{yhi:.1f}" '
                        f'stroke="black" stroke-width="1"/>'
                    )
            out.append(
                f'<text x="{left + g * group_w + group_w / 2:.1f}" y="{base + 16}" '
                f'text-anchor="middle">{sc.id}</text>'
            )
        out.append(
            f'<line x1="{left}" y1="{base}" x2="{right}" y2="{base}" stroke="black"/>'
        )
    out.append(
        f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle" fill="#555">'
        "Scenarios: 1 keep-alive GET, 2 new connection per request, 3 64 KiB responses, "
        "4 many connections, 5 many endpoints, 6 idle connections, 7 Compose</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _short(v):
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"
