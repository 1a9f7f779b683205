"""The console's pages: server-side HTML, autoescaped (nothing a user wrote runs).

The one script, serve/stream.py's live.js, streams running logs and refreshes live parts;
every page works without it.

Responsive (a card per service below 640 px), light and dark by
prefers-color-scheme, and every text colour pair at WCAG AA contrast.

Templates are Jinja templates by name in TEMPLATES; every page extends "base.html"
and leaves blocks for other modules to fill without editing this one: `actions`
(buttons above a page's content), `cell_actions` (inside each matrix cell),
`release_actions` (each release row of a service page), `log` (a run's log) and
`scripts` (end of body). `register(name, source)` adds a template (one that
`{% extends "service.html" %}` and overrides a block, say) and `render(name, ...)`
renders any of them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import DictLoader, Environment, select_autoescape

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
        "add-bg": "#dafbe1",
        "del-bg": "#ffebe9",
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
        "add-bg": "#12361f",
        "del-bg": "#3c1618",
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
    ("fg", "add-bg"),
    ("fg", "del-bg"),
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
nav.crumbs{font-size:.85rem;margin-bottom:.3rem}nav.crumbs span{color:var(--muted)}
a.cell-link{display:block;color:inherit;text-decoration:none}
a.cell-link:hover .tag,a.cell-link:focus .tag{text-decoration:underline}
.more{font-size:.8rem}nav.envs{font-size:.85rem;margin:0 0 .4rem}
.badge.no_changes{background:var(--muted)}.badge.blocked{background:var(--bad)}
.badge.drift{background:var(--warn)}.badge.healed{background:var(--ok)}
form.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;margin:.4rem 0 .8rem}
form.filters label{display:flex;flex-direction:column;font-size:.8rem;color:var(--muted);
  max-width:100%;min-width:0}
select,input,button{font:inherit;font-size:.85rem;color:var(--fg);background:var(--bg);
  border:1px solid var(--border);border-radius:.3rem;padding:.2rem .4rem;max-width:100%}
button{background:var(--panel);cursor:pointer}
.pager{display:flex;gap:1rem;margin:.6rem 0}
.plan{border:1px solid var(--border);border-radius:.4rem;padding:.4rem .7rem;margin:.6rem 0}
.plan h3{font-size:1rem;margin:.2rem 0}
.act{font-weight:700}.act.create{color:var(--ok)}.act.update{color:var(--warn)}
.act.delete,.act.blocked{color:var(--bad)}.act.noop{color:var(--muted)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .8rem;font-size:.85rem}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;overflow-wrap:anywhere}
pre.diff{background:var(--panel);color:var(--fg);max-height:none;white-space:pre;overflow-x:auto}
pre.diff span{display:block}pre.diff .add{background:var(--add-bg)}
pre.diff .del{background:var(--del-bg)}pre.diff .hunk{color:var(--info)}
pre.full{max-height:none}
.error-box{border:1px solid var(--bad);border-left:4px solid var(--bad);background:var(--bad-bg);
  padding:.4rem .7rem;margin:.6rem 0}
.error-box pre{max-height:none}
.src{color:var(--muted);font-size:.75rem}
table.values th code,#values th code{white-space:nowrap;overflow-wrap:normal}
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

BASE = (
    """<!doctype html>
<html lang="en"><head>"""
    + HEAD
    + """
<title>{% block title %}configcenter · {{ project }}{% endblock %}</title>
<style>{{ style }}</style>{% block head %}{% endblock %}</head>
<body>
<header>
{% block header %}<nav class="crumbs" aria-label="breadcrumb"><a href="{{ root }}">{{ project }}</a>
{% block crumbs %}{% endblock %}</nav>{% endblock %}
</header>
<main>
<div id="actions" class="actions">{% block actions %}{% endblock %}</div>
{% block content %}{% endblock %}
</main>
{% block scripts %}<script src="{{ root }}assets/live.js" data-root="{{ root }}" defer></script>
{% endblock %}
</body></html>
"""
)

MACROS = """
{% macro badge(shown) -%}
<span class="badge {{ shown.outcome }}">{{ "✗ " ~ shown.label|upper if shown.outcome in
  ('failed', 'rolled_back') else shown.label }}</span>
{%- endmacro %}

{% macro when(iso) %}{{ (iso or "")[:19]|replace("T", " ") }}{% endmacro %}

{% macro short(sha, n=10) %}{% if sha %}<code title="{{ sha }}">{{ sha[:n] }}</code>{% else
  %}-{% endif %}{% endmacro %}

{% macro value(v) -%}
{%- if v is string %}{{ v }}{% elif v is none %}null{% else %}{{ v|tojson }}{% endif -%}
{%- endmacro %}

{% macro diff(text) -%}
<pre class="diff">{% for line in text.splitlines() %}<span class="{{ 'hunk' if line.startswith('@@')
 else 'add' if line.startswith('+') and not line.startswith('+++') else 'del' if
 line.startswith('-') and not line.startswith('---') else 'ctx' }}">{{ line }}</span>{% endfor
 %}</pre>
{%- endmacro %}

{% macro runs_table(runs, root, filtered=False, tail=40) %}
<div class="scroll">
<table id="runs">
<thead><tr><th scope="col">outcome</th><th scope="col">run</th><th scope="col">kind</th>
<th scope="col">env</th><th scope="col">services</th><th scope="col">trigger</th>
<th scope="col">by</th><th scope="col">started</th></tr></thead>
<tbody>
{% for r in runs %}{% set bad = r.outcome in ('failed', 'rolled_back') %}
<tr class="{{ 'failed' if bad else '' }}" data-run="{{ r.id }}"
 data-outcome="{{ r.shown.outcome }}">
  <td>{{ badge(r.shown) }}</td>
  <td><a href="{{ root }}runs/{{ r.id }}">{{ r.id }}</a></td><td>{{ r.kind }}</td>
  <td>{{ r.env }}</td>
  <td>{{ r.changed|join(", ") if r.changed else "-" }}{% if r.services and r.services != r.changed
  %} <span class="muted">(asked: {{ r.services|join(", ") }})</span>{% endif %}</td>
  <td>{{ r.trigger }}</td><td>{{ r.actor }}</td><td>{{ when(r.started_at) }}</td>
</tr>
{% if bad and (r.log or r.details.error) %}{% set lines = (r.log or "").splitlines() %}
<tr class="failed"><td colspan="8"><details open>
<summary>log{% if lines|length > tail %} (the last {{ tail }} lines; the run's page has all {{
 lines|length }}){% endif %}</summary><pre>{{ lines[-tail:]|join("\\n") }}{% if r.details.error
 %}{{ "\\n" if lines }}error: {{ r.details.error }}{% endif %}</pre></details></td></tr>{% endif %}
{% else %}<tr><td colspan="8" class="muted">no runs{{ " match" if filtered else " yet" }}</td>
</tr>{% endfor %}
</tbody>
</table>
</div>
{% endmacro %}

{% macro run_filters(action, filters, choices) %}
<form class="filters" method="get" action="{{ action }}" aria-label="filter runs">
{% for name in ("env", "kind", "outcome") %}
<label>{{ name }}<select name="{{ name }}"><option value="">any</option>
{% for choice in choices[name] %}<option{% if filters[name] == choice %} selected{% endif
 %}>{{ choice }}</option>{% endfor %}</select></label>{% endfor %}
<label>service<input name="service" value="{{ filters.service or '' }}" list="service-names"
 size="12"></label>
<datalist id="service-names">{% for s in choices.service %}<option value="{{ s }}">{% endfor
%}</datalist>
<button type="submit">filter</button>
</form>
{% endmacro %}

{% macro service_plan(s, root, env, link=True) %}
<div class="plan" data-service="{{ s.service }}" data-action="{{ s.action }}">
<h3><span class="act {{ s.action }}">{{ marks[s.action] }} {{ s.action }}</span>
{% if link %}<a href="{{ root }}environments/{{ env|urlencode }}/services/{{ s.service|urlencode
 }}">{{ s.service }}</a>{% else %}{{ s.service }}{% endif %}
{% if s.reasons %}<span class="muted">[{{ s.reasons|join(", ") }}]</span>{% endif %}</h3>
{% if s.blocked %}<p class="why">{{ s.blocked }}</p>{% endif %}
{% if s.platform %}<p class="why">{{ s.platform.why }}</p>{% endif %}
<dl class="facts">
{% if s.template.from != s.template.to %}<dt>template</dt>
<dd>{{ s.template.from or "(none)" }} → {{ s.template.to or "(none)" }}</dd>{% endif %}
{% if s.image.from != s.image.to and (s.image.from or s.image.to) %}<dt>image</dt>
<dd><code>{{ s.image.from or "(none)" }}</code> → <code>{{ s.image.to or "(none)" }}</code></dd>
{% endif %}
{% if s.replicas %}<dt>replicas</dt><dd>{{ s.replicas.from }} → {{ s.replicas.to }}</dd>{% endif %}
{% if s.secrets and s.secrets.rotated %}<dt>secrets rotated</dt>
<dd>{{ s.secrets.rotated|join(", ") }}</dd>{% endif %}
{% if s.secrets and s.secrets.cannot_separate %}<dt>secrets may have rotated</dt>
<dd>{{ s.secrets.cannot_separate["keys"]|join(", ") }} (cannot tell them apart:
{{ s.secrets.cannot_separate.why }})</dd>{% endif %}
{% if s.secrets and s.secrets.unknown %}<dt>secrets</dt><dd>not checked for rotation:
{{ s.secrets.unknown }}</dd>{% endif %}
{% if s.unverified %}<dt>image</dt><dd>not pinned to a digest: {{ s.unverified }}</dd>{% endif %}
</dl>
{% set rows = [] %}
{% for kind in ("changed", "added", "removed") %}{% for key, c in s["values"][kind].items() %}
{% set _ = rows.append((kind, key, c)) %}{% endfor %}{% endfor %}
{% if rows %}<div class="scroll"><table class="values"><caption>values</caption>
<thead><tr><th scope="col">key</th><th scope="col">change</th><th scope="col">from</th>
<th scope="col">to</th><th scope="col">set in</th></tr></thead><tbody>
{% for kind, key, c in rows %}<tr data-key="{{ key }}"><th scope="row"><code>{{ key }}</code></th>
<td>{{ kind }}</td><td><code>{{ value(c.from) if "from" in c else "-" }}</code></td>
<td><code>{{ value(c.to) if "to" in c else "-" }}</code></td>
<td class="src">{{ c.source or "-" }}</td></tr>{% endfor %}
</tbody></table></div>{% endif %}
{% for name, text in s.files.items() %}<details class="file" open><summary>{{ name }}</summary>
{{ diff(text) }}</details>{% endfor %}
</div>
{% endmacro %}
"""

INDEX = """{% extends "base.html" %}{% from "macros.html" import runs_table, run_filters %}
{% block header %}
<h1>configcenter · {{ project }}</h1>
<div class="meta">replica {{ identity }} · {{ "leader (runs the schedule)" if leader
 else "follower" }} · jobs: {% for state, n in jobs.items() %}{{ state }} {{ n }}{% if not
 loop.last %}, {% endif %}{% else %}none{% endfor %}</div>
{% endblock %}
{% block actions %}<a href="{{ root }}actions">actions: apply, retry, roll back, heal, promote</a>
{% endblock %}
{% block content %}
<section aria-labelledby="matrix-title">
<h2 id="matrix-title">Environments × services</h2>
<nav class="envs" aria-label="environment plans">plans: {% for env in matrix.environments %}<a
 href="{{ root }}environments/{{ env|urlencode }}">{{ env }}</a>{{ " · " if not loop.last }}{%
 endfor %}</nav>
<div class="scroll">
<table id="matrix" class="matrix">
<caption>status of each service's current release, and drift from the last reconcile;
open a cell for its history and plan, an environment for its plan</caption>
<thead><tr><th scope="col">service</th>{% for env in matrix.environments %}
<th scope="col"><a href="{{ root }}environments/{{ env|urlencode }}">{{ env }}</a></th>{% endfor
%}</tr></thead>
<tbody>
{% for service in matrix.services %}
<tr>
  <th scope="row">{{ service }}</th>
  {% for env in matrix.environments %}{% set c = matrix.cells[env].get(service) %}
  <td class="cell" data-env="{{ env }}" data-service="{{ service }}"
      data-status="{{ c.status if c else 'absent' }}"
      data-drift="{{ c.drift.state if c else 'absent' }}">
  {% if c %}
    <a class="cell-link" href="{{ root }}environments/{{ env|urlencode }}/services/{{
      service|urlencode }}"><span class="tag">{{ c.template or "-" }}</span></a>
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
    <a class="more" href="{{ root }}environments/{{ env|urlencode }}/services/{{
      service|urlencode }}">history, diff, plan →</a>
    {% block cell_actions scoped %}{% endblock %}
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
{{ run_filters(root ~ "runs", filters, choices) }}
{{ runs_table(runs, root) }}
<p class="pager"><a href="{{ root }}runs">all runs →</a></p>
</section>
{% endblock %}
"""

RUNS = """{% extends "base.html" %}{% from "macros.html" import runs_table, run_filters %}
{% block title %}runs · {{ project }}{% endblock %}
{% block crumbs %}<span> / </span>runs{% endblock %}
{% block content %}
<h1>Runs</h1>
{{ run_filters("", filters, choices) }}
{{ runs_table(runs, root, filtered=filters.values()|select|list|length > 0) }}
<nav class="pager" aria-label="pages">
{% if filters.before %}<a href="?{{ query(before=None) }}">← newest</a>{% endif %}
{% if next %}<a rel="next" href="?{{ query(before=next) }}">older →</a>{% endif %}
{% if stopped %}<span class="muted">looked at {{ scanned }} runs for this page</span>{% endif %}
</nav>
{% endblock %}
"""

RUN = """{% extends "base.html" %}{% from "macros.html" import badge, when, short %}
{% block title %}run {{ run.id }}{% endblock %}
{% block crumbs %}<span> / </span><a href="{{ root }}runs">runs</a><span> / </span>{{ run.id
}}{% endblock %}
{% block content %}
<h1>{{ run.kind }} {{ run.env }} {{ badge(shown) }}</h1>
<div class="meta">{{ run.id }} · {{ run.trigger }} · {{ run.actor }} · started
{{ when(run.started_at.isoformat()) }}{% if run.ended_at %} · ended
{{ when(run.ended_at.isoformat()) }}{% endif %}</div>
<dl class="facts">
<dt>environment</dt><dd><a href="{{ root }}environments/{{ run.env|urlencode }}">{{ run.env
}}</a></dd>
<dt>changed</dt><dd>{% for s in changed %}<a href="{{ root }}environments/{{ run.env|urlencode
 }}/services/{{ s|urlencode }}">{{ s }}</a>{{ ", " if not loop.last }}{% else %}{{ "nothing"
 if run.outcome != "running" else "-" }}{% endfor %}</dd>
{% if run.services %}<dt>asked for</dt><dd>{{ run.services|join(", ") }}</dd>{% endif %}
{% if run.details.config_commit %}<dt>config commit</dt><dd>{{ short(run.details.config_commit)
}}</dd>{% endif %}
{% if run.details.commit %}<dt>deploy commit</dt><dd>{{ short(run.details.commit) }}</dd>{% endif %}
{% if run.details.rollback_commit %}<dt>rollback commit</dt><dd>{{
 short(run.details.rollback_commit) }}</dd>{% endif %}
</dl>
{% if error %}<section class="error-box" aria-labelledby="error-title">
<h2 id="error-title">Error</h2><pre class="full" id="error">{{ error }}</pre></section>{% endif %}
{% if results %}<h2>Services</h2><div class="scroll"><table id="results"><thead><tr>
<th scope="col">service</th><th scope="col">action</th><th scope="col">outcome</th>
<th scope="col">release</th><th scope="col">reason</th></tr></thead><tbody>
{% for r in results %}<tr><th scope="row">{{ r.service }}</th><td>{{ r.action }}</td>
<td>{{ r.outcome }}</td><td>{{ r.release or "-" }}</td><td>{{ r.reason or "" }}</td></tr>
{% endfor %}</tbody></table></div>{% endif %}
<h2>Log</h2>
{% block log %}{% if run.outcome == "running" %}<pre id="log" data-offset="{{ run.log|length
 }}" data-stream="{{ root }}events/runs/{{ run.id|urlencode }}">{{ run.log }}</pre>
{% elif run.log %}<pre id="log">{{ run.log }}</pre>{% else %}<p class="muted" id="log">the run
wrote no log lines{% if error %}; the error above is why it failed{% endif %}</p>{% endif %}
{% endblock %}
<h2>Details</h2><pre class="full" id="details">{{ details }}</pre>
{% endblock %}
"""

SERVICE = """{% extends "base.html" %}{% from "macros.html" import badge, when, short,
 service_plan %}
{% block title %}{{ service }} in {{ env }} · {{ project }}{% endblock %}
{% block crumbs %}<span> / </span><a href="{{ root }}environments/{{ env|urlencode }}">{{ env
}}</a><span> / </span>{{ service }}{% endblock %}
{% block actions %}{% if actions_enabled %}<a href="{{ root }}actions/rollback?{{ {"env": env,
 "service": service}|urlencode }}">roll back…</a> · <a href="{{ root }}actions/confirm?{{
 {"kind": "apply", "env": env, "service": service}|urlencode }}">apply {{ service }}</a>{% endif
 %}{% endblock %}
{% block content %}
{% set c = detail.status %}
<h1>{{ service }} <span class="muted">in {{ env }}</span></h1>
<dl class="facts" id="current" data-status="{{ c.status }}" data-drift="{{ c.drift.state }}">
<dt>status</dt><dd class="st {{ c.status }}">{{ labels[c.status] }}{% if c.status_why %}
<span class="why">{{ c.status_why }}</span>{% endif %}</dd>
<dt>release</dt><dd>{{ c.release.id if c.release else "-" }}{% if c.release and c.release.reason
%} <span class="why">{{ c.release.reason }}</span>{% endif %}</dd>
<dt>template</dt><dd>{{ c.template or "-" }}</dd>
<dt>image</dt><dd><code>{{ c.image or "-" }}</code></dd>
<dt>drift</dt><dd>{% if c.drift.state == "known" %}<span class="d-known">⚠ {{ c.drift.count }}:
{% for d in c.drift['items'] %}{{ d.field }} {{ d.desired or "-" }} → {{ d.live or "-" }}{{ "; "
 if not loop.last }}{% endfor %}</span>{% elif c.drift.state == "none" %}<span class="d-none">✓ in
sync</span>{% else %}<span class="d-unknown">unknown: {{ c.drift.why }}</span>{% endif %}</dd>
</dl>
{% for w in detail.warnings %}<p class="why">warning: {{ w }}</p>{% endfor %}

<section aria-labelledby="plan-title" id="plan">
<h2 id="plan-title">Pending plan</h2>
{% if detail.plan_error %}<div class="error-box"><pre class="full">{{ detail.plan_error }}</pre>
</div>{% elif not detail.plan or detail.plan.action == "noop" %}<p class="d-none"
 id="plan-none">nothing to do: {{ service }} in {{ env }} is as the config repo says</p>
{% else %}{{ service_plan(detail.plan, root, env, link=False) }}{% endif %}
</section>

<section aria-labelledby="history-title" id="history">
<h2 id="history-title">Releases</h2>
<p class="more"><a id="service-runs" href="{{ root }}runs?{{ {"env": env, "service":
 service}|urlencode }}">runs of {{ service }} in {{ env }} →</a></p>
{% set releases = detail.releases %}
{% if releases|length > 1 %}
<form class="filters" method="get" action="{{ service|urlencode }}/diff" id="diff-form"
 aria-label="compare two releases">
<label>from<select name="from" id="diff-from">{% for r in releases %}<option value="{{ r.release
}}"{% if loop.index == 2 %} selected{% endif %}>{{ r.release }} ({{ when(r.at) }})</option>{%
endfor %}</select></label>
<label>to<select name="to" id="diff-to">{% for r in releases %}<option value="{{ r.release }}"{%
if loop.first %} selected{% endif %}>{{ r.release }} ({{ when(r.at) }})</option>{% endfor
%}</select></label>
<button type="submit" id="diff-submit">show diff</button>
</form>{% endif %}
<div class="scroll">
<table id="releases"><thead><tr><th scope="col">release</th><th scope="col">outcome</th>
<th scope="col">when</th><th scope="col">by</th><th scope="col">config commit</th>
<th scope="col">template</th><th scope="col">image</th><th scope="col">run</th>
<th scope="col">diff</th></tr></thead>
<tbody>
{% for r in releases %}
<tr data-release="{{ r.release }}">
<th scope="row">{{ r.release }}</th>
<td>{{ badge({"outcome": r.outcome, "label": r.outcome|replace("_", " ")}) }}{% if r.reason %}
<div class="why">{{ r.reason }}</div>{% endif %}</td>
<td>{{ when(r.at) }}</td><td>{{ r.by or "-" }}</td><td>{{ short(r.config_commit) }}</td>
<td>{{ r.template_tag or "-" }}</td><td class="mono">{{ short_digest(r.image) or "-" }}</td>
<td>{% if r.run %}<a href="{{ root }}runs/{{ r.run }}">{{ r.run[:16] }}…</a>{% else %}-{% endif
%}</td>
<td>{% if not loop.last %}<a class="diff-prev" href="{{ service|urlencode }}/diff?from={{
 releases[loop.index].release|urlencode }}&amp;to={{ r.release|urlencode }}">vs previous</a>{%
 else %}-{% endif %}</td>
{% block release_actions scoped %}{% endblock %}
</tr>
{% else %}<tr><td colspan="9" class="muted">no releases of {{ service }} in {{ env }} yet</td>
</tr>{% endfor %}
</tbody></table></div>
{% if releases|length == limit %}<p class="more"><a id="older-releases" href="?limit={{
 [limit * 4, 1000]|min }}">more releases →</a></p>{% endif %}
</section>
{% endblock %}
"""

ENV = """{% extends "base.html" %}{% from "macros.html" import service_plan, short %}
{% block title %}plan for {{ env }} · {{ project }}{% endblock %}
{% block crumbs %}<span> / </span>{{ env }}{% endblock %}
{% block actions %}{% if actions_enabled %}<a href="{{ root
 }}actions/confirm?{{ {"kind": "apply", "env": env}|urlencode
 }}">apply {{ env }}…</a> · <a href="{{ root }}actions/confirm?{{ {"kind": "heal", "env": env
 }|urlencode }}">heal drift…</a>{% endif %}{% endblock %}
{% block content %}
<h1>Plan for {{ env }}</h1>
<p class="meta">what <code>configcenter apply {{ env }}</code> would do now{% if plan and
 plan.config_commit %}, from config commit {{ short(plan.config_commit) }}{% endif %}</p>
{% if error %}<div class="error-box"><h2>The plan cannot be made</h2><pre class="full"
 id="plan-error">{{ error }}</pre></div>
{% else %}
<p id="plan-summary" data-change="{{ plan.summary.change }}">{{ plan.summary.change }} to change,
{{ plan.summary.blocked }} blocked, {{ plan.summary.unchanged }} unchanged</p>
{% for w in plan.warnings %}<p class="why">warning: {{ w.message }}</p>{% endfor %}
<section id="plan">
{% for s in plan.services if s.action != "noop" %}{{ service_plan(s, root, env) }}
{% else %}<p class="d-none">nothing to do: {{ env }} is as the config repo says</p>{% endfor %}
</section>
{% set same = plan.services|selectattr("action", "equalto", "noop")|list %}
{% if same %}<p class="muted">unchanged: {% for s in same %}<a href="{{ root }}environments/{{
 env|urlencode }}/services/{{ s.service|urlencode }}">{{ s.service }}</a>{{ ", " if not loop.last
 }}{% endfor %}</p>{% endif %}
{% endif %}
{% endblock %}
"""

DIFF = """{% extends "base.html" %}{% from "macros.html" import value, diff, short, when %}
{% block title %}{{ service }} {{ a }} → {{ b }} · {{ project }}{% endblock %}
{% block crumbs %}<span> / </span><a href="{{ root }}environments/{{ env|urlencode }}">{{ env
}}</a><span> / </span><a href="../{{ service|urlencode }}">{{ service }}</a><span> / </span>diff
{% endblock %}
{% block content %}
<h1>{{ service }} in {{ env }}: {{ a }} → {{ b }}</h1>
{% if error %}<div class="error-box"><pre class="full" id="diff-error">{{ error }}</pre></div>
{% else %}
<dl class="facts" id="sides">{% for label, side in (("from", d["from"]), ("to", d["to"])) %}
<dt>{{ label }}</dt><dd>{{ side.release }} · {{ side.outcome }} · {{ when(side.at) }} · config
{{ short(side.config_commit) }} · deploy commit {{ short(side.commit) }}</dd>{% endfor %}</dl>
{% if d.fields %}<h2>Pins</h2><div class="scroll"><table id="fields"><thead><tr>
<th scope="col">field</th><th scope="col">from</th><th scope="col">to</th></tr></thead><tbody>
{% for k, f in d.fields.items() %}<tr><th scope="row">{{ k }}</th><td><code>{{ value(f.from)
}}</code></td><td><code>{{ value(f.to) }}</code></td></tr>{% endfor %}</tbody></table></div>
{% endif %}
<h2>Values</h2>
{% set v = d["values"] %}
{% if v.changed or v.added or v.removed %}<div class="scroll"><table id="values"><thead><tr>
<th scope="col">key</th><th scope="col">change</th><th scope="col">from</th>
<th scope="col">to</th><th scope="col">set in</th></tr></thead><tbody>
{% for kind in ("changed", "added", "removed") %}{% for key, c in v[kind].items() %}
<tr data-key="{{ key }}"><th scope="row"><code>{{ key }}</code></th><td>{{ kind }}</td>
<td><code>{{ value(c.from) if "from" in c else "-" }}</code></td>
<td><code>{{ value(c.to) if "to" in c else "-" }}</code></td>
<td class="src">{% set src = d.sources.get(key, {}) if d.sources else {} %}{% if src.get("from")
 and src.get("from") != src.get("to") %}{{ src.get("from") }} → {% endif %}{{ src.get("to") or
 src.get("from") or "-" }}</td></tr>
{% endfor %}{% endfor %}</tbody></table></div>
{% else %}<p class="muted" id="values-same">no value differs</p>{% endif %}
{% if d.sources_note %}<p class="why">{{ d.sources_note }}</p>{% endif %}
<h2>Rendered files</h2>
{% for name, text in d.files.items() %}<h3 class="mono">{{ name }}</h3>{{ diff(text) }}
{% else %}<p class="muted" id="files-same">no rendered file differs</p>{% endfor %}
{% endif %}
{% endblock %}
"""

ERROR = """{% extends "base.html" %}
{% block title %}{{ message }} · {{ project }}{% endblock %}
{% block content %}<div class="error-box"><h1>{{ message }}</h1><p>{{ fix }}</p></div>
{% endblock %}
"""

#: Templates by name; `register` adds or replaces one.
TEMPLATES: dict[str, str] = {
    "base.html": BASE,
    "macros.html": MACROS,
    "index.html": INDEX,
    "runs.html": RUNS,
    "run.html": RUN,
    "service.html": SERVICE,
    "env.html": ENV,
    "diff.html": DIFF,
    "error.html": ERROR,
}

#: The mark in front of each plan action, as `configcenter plan` prints it.
MARKS = {"create": "+", "update": "~", "delete": "-", "noop": "=", "blocked": "!"}


def register(name: str, source: str) -> None:
    """Add (or replace) template `name`; pages rendered afterwards can use or extend it."""
    TEMPLATES[name] = source
    _env.cache_clear()


@cache
def _env() -> Environment:
    from configcenter.serve.status import short_digest

    env = Environment(
        loader=DictLoader(dict(TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.globals.update(
        style=STYLE, labels=LABELS, marks=MARKS, short_digest=short_digest, project="configcenter"
    )
    env.globals.update(GLOBALS)
    return env


#: Values every template sees, set by other modules (serve/actions: `actions_enabled`).
GLOBALS: dict[str, Any] = {}


def set_global(name: str, value: Any) -> None:
    """Give every template `name` (pages rendered afterwards see it)."""
    GLOBALS[name] = value
    _env.cache_clear()


def root_of(path: str) -> str:
    """The relative link from a page at `path` back to the app's root ("./", "../", ...),
    so the pages work behind a reverse proxy's path prefix."""
    depth = path.count("/") - 1
    return "../" * depth if depth > 0 else "./"


def render(name: str, **context: Any) -> str:
    return _env().get_template(name).render(**context)


def render_index(**context: Any) -> str:
    from configcenter.serve.status import STATUSES

    context.setdefault("root", "./")
    context.setdefault("filters", {})
    context.setdefault("choices", {})
    return render("index.html", meanings=STATUSES, **context)


def render_run(**context: Any) -> str:
    context.setdefault("root", "../")
    return render("run.html", **context)
