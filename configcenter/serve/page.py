"""The status page: server-side HTML, no JavaScript, autoescaped (nothing a user wrote runs).

Responsive (a card per service below 640 px), light and dark by
prefers-color-scheme, and every text colour pair at WCAG AA contrast.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, select_autoescape

#: Colours per scheme. Every (foreground, background) pair in CONTRAST_PAIRS reaches
#: WCAG AA (4.5:1); tests/serve/test_console.py computes the ratios.
PALETTES: dict[str, dict[str, str]] = {
    "light": {
        "bg": "#ffffff",
        "panel": "#f6f8fa",
        "fg": "#1f2328",
        "muted": "#57606a",
        "border": "#d0d7de",
        "ok": "#1a7f37",
        "bad": "#b42318",
        "warn": "#7a4d00",
        "warn-bg": "#fff8c5",
        "info": "#0550ae",
        "busy": "#6639ba",
        "bad-bg": "#ffebe9",
        "badge-fg": "#ffffff",
        "code-bg": "#1f2328",
        "code-fg": "#f6f8fa",
        "link": "#0550ae",
    },
    "dark": {
        "bg": "#0d1117",
        "panel": "#161b22",
        "fg": "#e6edf3",
        "muted": "#9198a1",
        "border": "#3d444d",
        "ok": "#3fb950",
        "bad": "#ff7b72",
        "warn": "#d29922",
        "warn-bg": "#2d2206",
        "info": "#79c0ff",
        "busy": "#d2a8ff",
        "bad-bg": "#2d1214",
        "badge-fg": "#0d1117",
        "code-bg": "#010409",
        "code-fg": "#e6edf3",
        "link": "#79c0ff",
    },
}
#: (foreground, background) pairs the page draws text with.
CONTRAST_PAIRS = [
    (fg, bg)
    for bg in ("bg", "panel")
    for fg in ("fg", "muted", "ok", "bad", "warn", "info", "busy", "link")
] + [
    ("warn", "warn-bg"),
    ("bad", "bad-bg"),
    ("fg", "bad-bg"),
    ("muted", "bad-bg"),
    ("code-fg", "code-bg"),
    *(("badge-fg", c) for c in ("ok", "bad", "info", "busy", "muted", "warn")),
]


def _vars(palette: dict[str, str]) -> str:
    return ";".join(f"--{name}:{value}" for name, value in palette.items())


STYLE = (
    ":root{" + _vars(PALETTES["light"]) + ";color-scheme:light dark}"
    "@media (prefers-color-scheme: dark){:root{"
    + _vars(PALETTES["dark"])
    + "}}"
    + """
body{font-family:system-ui,sans-serif;margin:0;color:var(--fg);background:var(--bg)}
header,main{padding:0 1rem}header{padding-top:1rem}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
a{color:var(--link)}
.meta,.muted{color:var(--muted)}.meta{font-size:.85rem}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;background:var(--bg);font-size:.85rem}
caption{text-align:left;color:var(--muted);font-size:.8rem;padding:.2rem 0}
th,td{border:1px solid var(--border);padding:.35rem .55rem;text-align:left;vertical-align:top}
thead th,tbody th{background:var(--panel)}
.cell{min-width:11rem;max-width:18rem}
.cell .tag{font-weight:600}
.mono,code{font-family:ui-monospace,monospace;font-size:.78rem;overflow-wrap:anywhere}
details.full summary{cursor:pointer;list-style:none}
details.full code{display:block;user-select:all;background:var(--panel);padding:.15rem .3rem}
.st{font-weight:700}
.st.healthy,.d-none{color:var(--ok)}
.st.failed,.st.rolled_back,.st.blocked{color:var(--bad)}
.st.committed{color:var(--info)}.st.progressing{color:var(--busy)}
.st.unknown,.st.not_deployed,.d-unknown{color:var(--muted)}
.why{color:var(--muted);font-size:.75rem;margin:.1rem 0}
.d-known{background:var(--warn-bg);color:var(--warn);font-weight:700;padding:.1rem .3rem}
.d-known ul{margin:.2rem 0 0 1rem;padding:0;font-weight:400}
tr.failed{background:var(--bad-bg)}tr.failed td:first-child{border-left:4px solid var(--bad)}
.badge{display:inline-block;padding:0 .4rem;border-radius:.6rem;font-size:.75rem;
  color:var(--badge-fg);background:var(--muted)}
.badge.failed,.badge.rolled_back{background:var(--bad)}
.badge.succeeded,.badge.healthy{background:var(--ok)}
.badge.committed{background:var(--info)}.badge.running{background:var(--busy)}
dl.legend{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .8rem;font-size:.8rem}
dl.legend dd{margin:0;color:var(--muted)}
pre{background:var(--code-bg);color:var(--code-fg);padding:.6rem;max-height:18rem;
  overflow:auto;font-size:.75rem;white-space:pre-wrap;overflow-wrap:anywhere}
@media (max-width: 640px){
  body{font-size:.95rem}
  table.matrix,table.matrix caption,table.matrix tbody,table.matrix tr,table.matrix th,
  table.matrix td{display:block}
  table.matrix thead{position:absolute;left:-9999px}
  table.matrix tr{margin:0 0 .8rem;border:1px solid var(--border)}
  table.matrix td,table.matrix tbody th{border:0;border-top:1px solid var(--border);max-width:none}
  table.matrix td::before{content:attr(data-env);display:block;font-weight:700;
    color:var(--muted);font-size:.75rem;text-transform:uppercase}
}
"""
)

HEAD = """<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">"""

INDEX = (
    """<!doctype html>
<html lang="en"><head>"""
    + HEAD
    + """
<title>configcenter · {{ project }}</title><style>{{ style }}</style></head>
<body>
<header>
<h1>configcenter · {{ project }}</h1>
<div class="meta">replica {{ identity }} · {{ "leader (runs the schedule)" if leader
 else "follower" }} · jobs: {% for state, n in jobs.items() %}{{ state }} {{ n }}{% if not
 loop.last %}, {% endif %}{% else %}none{% endfor %}</div>
</header>
<main>
<section aria-labelledby="matrix-title">
<h2 id="matrix-title">Environments × services</h2>
<div class="scroll">
<table id="matrix" class="matrix">
<caption>status of each service's current release, and drift from the last reconcile</caption>
<thead><tr><th scope="col">service</th>{% for env in matrix.environments %}
<th scope="col">{{ env }}</th>{% endfor %}</tr></thead>
<tbody>
{% for service in matrix.services %}
<tr>
  <th scope="row">{{ service }}</th>
  {% for env in matrix.environments %}{% set c = matrix.cells[env].get(service) %}
  <td class="cell" data-env="{{ env }}" data-service="{{ service }}"
      data-status="{{ c.status if c else 'absent' }}"
      data-drift="{{ c.drift.state if c else 'absent' }}">
  {% if c %}
    <div class="tag">{{ c.template or "-" }}</div>
    {% if c.image %}{% if c.image_short != c.image %}<details class="full">
      <summary class="mono" title="{{ c.image }}">{{ c.image_short }}</summary>
      <code>{{ c.image }}</code></details>{% else %}
      <div class="mono">{{ c.image }}</div>{% endif %}{% endif %}
    <div class="st {{ c.status }}">{{ labels[c.status] }}</div>
    {% if c.status_why %}<div class="why">{{ c.status_why }}</div>{% endif %}
    {% if c.release and c.release.reason %}<div class="why">{{ c.release.reason }}</div>
    {% endif %}
    {% if c.status != "not_deployed" %}
    {% if c.drift.state == "known" %}<div class="d-known">⚠ drift {{ c.drift.count }}
      {% if c.drift.status != "drifted" %}({{ c.drift.status|replace("_", " ") }}){% endif %}
      <ul>{% for d in c.drift['items'] %}<li>{{ d.field }}: {{ d.desired or "-" }} →
      {{ d.live or "-" }}</li>{% endfor %}</ul></div>
    {% elif c.drift.state == "none" %}<div class="d-none">✓ in sync</div>
    {% else %}<div class="d-unknown">drift unknown: {{ c.drift.why }}</div>{% endif %}
    {% endif %}
  {% else %}<span class="muted">not in this environment</span>{% endif %}
  </td>{% endfor %}
</tr>
{% else %}<tr><td colspan="{{ matrix.environments|length + 1 }}" class="muted">
no services yet</td></tr>{% endfor %}
</tbody>
</table>
</div>
<details><summary>what the statuses mean</summary><dl class="legend">
{% for key, text in meanings.items() %}<dt class="st {{ key }}">{{ labels[key] }}</dt>
<dd>{{ text }}</dd>{% endfor %}</dl></details>
</section>

<section aria-labelledby="runs-title">
<h2 id="runs-title">Runs</h2>
<div class="scroll">
<table id="runs">
<thead><tr><th scope="col">outcome</th><th scope="col">run</th><th scope="col">kind</th>
<th scope="col">env</th><th scope="col">services</th><th scope="col">trigger</th>
<th scope="col">by</th><th scope="col">started</th></tr></thead>
<tbody>
{% for r in runs %}
<tr class="{{ 'failed' if r.outcome in ('failed', 'rolled_back') else '' }}">
  <td><span class="badge {{ r.outcome }}">{{ "✗ " ~ r.outcome|upper if r.outcome in
    ('failed', 'rolled_back') else r.outcome }}</span></td>
  <td><a href="runs/{{ r.id }}">{{ r.id }}</a></td><td>{{ r.kind }}</td><td>{{ r.env }}</td>
  <td>{{ r.services|join(", ") }}</td><td>{{ r.trigger }}</td><td>{{ r.actor }}</td>
  <td>{{ r.started_at.strftime("%Y-%m-%d %H:%M:%S") }}</td>
</tr>
{% if r.log %}<tr class="{{ 'failed' if r.outcome in ('failed', 'rolled_back') else '' }}">
<td colspan="8"><details{% if r.outcome in ('failed', 'rolled_back') %} open{% endif %}>
<summary>log</summary><pre>{{ r.log }}</pre></details></td></tr>{% endif %}
{% else %}<tr><td colspan="8" class="muted">no runs yet</td></tr>{% endfor %}
</tbody>
</table>
</div>
</section>
</main>
</body></html>
"""
)

#: The words a cell shows for each status.
LABELS = {
    "healthy": "healthy",
    "progressing": "progressing",
    "failed": "✗ failed",
    "rolled_back": "✗ rolled back",
    "blocked": "⛔ blocked",
    "committed": "committed, not rolled out",
    "not_deployed": "not deployed",
    "unknown": "status unknown",
}

RUN = (
    """<!doctype html>
<html lang="en"><head>"""
    + HEAD
    + """<title>run {{ run.id }}</title>
<style>{{ style }}</style></head><body><header>
<p><a href="../">← status</a></p>
<h1>{{ run.kind }} {{ run.env }} <span class="badge {{ run.outcome }}">{{ run.outcome }}</span></h1>
<div class="meta">{{ run.id }} · {{ run.trigger }} · {{ run.actor }} · started {{ run.started_at }}
{% if run.ended_at %}· ended {{ run.ended_at }}{% endif %}</div></header>
<main><h2>Log</h2><pre>{{ run.log or "(empty)" }}</pre>
<h2>Details</h2><pre>{{ details }}</pre></main>
</body></html>
"""
)


@cache
def _env() -> Environment:
    return Environment(autoescape=select_autoescape(default=True, default_for_string=True))


def render_index(**context: Any) -> str:
    from configcenter.serve.status import STATUSES

    return (
        _env().from_string(INDEX).render(style=STYLE, labels=LABELS, meanings=STATUSES, **context)
    )


def render_run(**context: Any) -> str:
    return _env().from_string(RUN).render(style=STYLE, **context)
