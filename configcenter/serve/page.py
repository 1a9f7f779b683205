"""The status page: server-side HTML, no JavaScript, autoescaped (nothing a user wrote runs)."""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, select_autoescape

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
.meta{color:#666;font-size:.85rem}
table{border-collapse:collapse;background:#fff;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.35rem .55rem;text-align:left;vertical-align:top}
th{background:#f0f0f0}
.cell .tag{font-weight:600}.cell .image{color:#555;font-family:monospace;font-size:.78rem}
.ok{color:#1a7f37}.bad{color:#b42318;font-weight:700}.warn{color:#9a6700;font-weight:700}
.muted{color:#999}
tr.failed{background:#fde8e8}tr.failed td:first-child{border-left:4px solid #b42318}
.badge{display:inline-block;padding:0 .4rem;border-radius:.6rem;font-size:.75rem}
.badge.failed,.badge.rolled_back{background:#b42318;color:#fff}
.badge.succeeded{background:#1a7f37;color:#fff}.badge.noop{background:#ddd}
.badge.running{background:#0969da;color:#fff}
.drift{background:#fff3cd;border:1px solid #9a6700;color:#9a6700;border-radius:.6rem;
  padding:0 .35rem;font-size:.75rem;font-weight:700}
pre{background:#111;color:#eee;padding:.6rem;max-height:18rem;overflow:auto;font-size:.75rem}
"""

INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>configcenter · {{ project }}</title><style>{{ style }}</style></head>
<body>
<h1>configcenter · {{ project }}</h1>
<div class="meta">replica {{ identity }} · {{ "leader (runs the schedule)" if leader
 else "follower" }} · jobs: {% for state, n in jobs.items() %}{{ state }} {{ n }}{% if not
 loop.last %}, {% endif %}{% else %}none{% endfor %}</div>

<h2>Environments × services</h2>
<table id="matrix">
<tr><th>service</th>{% for env in matrix.environments %}<th>{{ env }}</th>{% endfor %}</tr>
{% for service in matrix.services %}
<tr>
  <th>{{ service }}</th>
  {% for env in matrix.environments %}{% set c = matrix.cells[env].get(service) %}
  <td class="cell" data-env="{{ env }}" data-service="{{ service }}">
  {% if c %}
    <div class="tag">{{ c.template or "-" }}</div>
    <div class="image">{{ c.image or "not deployed" }}</div>
    {% if c.release %}<div class="{{ 'ok' if c.release.outcome in ('healthy', 'committed')
      else 'bad' }}">{{ c.health }}</div>{% else %}<div class="muted">{{ c.health }}</div>
    {% endif %}
    {% if c.drift and c.drift.count %}<span class="drift" title="{% for d in c.drift['items']
      %}{{ d.field }}: {{ d.desired }} → {{ d.live }}&#10;{% endfor %}">⚠ drift
      {{ c.drift.count }}</span>{% elif c.drift %}<span class="ok">in sync</span>{% endif %}
  {% else %}<span class="muted">—</span>{% endif %}
  </td>{% endfor %}
</tr>
{% else %}<tr><td colspan="{{ matrix.environments|length + 1 }}" class="muted">
no services yet</td></tr>{% endfor %}
</table>

<h2>Runs</h2>
<table id="runs">
<tr><th>outcome</th><th>run</th><th>kind</th><th>env</th><th>services</th><th>trigger</th>
<th>by</th><th>started</th></tr>
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
</table>
</body></html>
"""

RUN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>run {{ run.id }}</title>
<style>{{ style }}</style></head><body>
<p><a href="../">← status</a></p>
<h1>{{ run.kind }} {{ run.env }} <span class="badge {{ run.outcome }}">{{ run.outcome }}</span></h1>
<div class="meta">{{ run.id }} · {{ run.trigger }} · {{ run.actor }} · started {{ run.started_at }}
{% if run.ended_at %}· ended {{ run.ended_at }}{% endif %}</div>
<h2>Log</h2><pre>{{ run.log or "(empty)" }}</pre>
<h2>Details</h2><pre>{{ details }}</pre>
</body></html>
"""


@cache
def _env() -> Environment:
    return Environment(autoescape=select_autoescape(default=True, default_for_string=True))


def render_index(**context: Any) -> str:
    return _env().from_string(INDEX).render(style=STYLE, **context)


def render_run(**context: Any) -> str:
    return _env().from_string(RUN).render(style=STYLE, **context)
