"""The console's action pages: what can be done, the plan to confirm, the action's live log.

Server-side HTML, autoescaped, in the status page's style (serve/page.py). The
only script is serve/stream.py's live.js: it streams the action's log over SSE
and refreshes the live parts of a page when the status changes.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, select_autoescape

from configcenter.serve.page import HEAD, LABELS, STYLE

ACTION_STYLE = """
nav a{margin-right:.8rem}
.actions-env{border:1px solid var(--border);padding:.4rem .8rem;margin:0 0 1rem}
.btn,button{display:inline-block;font:inherit;font-size:.85rem;padding:.3rem .7rem;
  border:1px solid var(--link);border-radius:.3rem;color:var(--link);background:var(--bg);
  text-decoration:none;cursor:pointer;margin:.15rem .3rem .15rem 0}
button.go{background:var(--link);color:var(--bg);font-weight:700}
.refusal{background:var(--bad-bg);color:var(--fg);border-left:4px solid var(--bad);
  padding:.5rem .8rem}
.warning{background:var(--warn-bg);color:var(--warn);padding:.3rem .6rem}
.plan li{margin:.2rem 0}
.plan .svc{font-weight:700}
.state{font-weight:700}
pre.log{max-height:28rem;min-height:4rem}
"""

_HEAD = (
    """<!doctype html>
<html lang="en"><head>"""
    + HEAD
    + """
<title>{% block title %}{% endblock %} · configcenter</title>
<style>{{ style }}{{ action_style }}</style></head><body>
<header><nav><a href="{{ root }}">← status</a><a href="{{ root }}actions">actions</a></nav>
"""
)
_FOOT = """
<script src="{{ root }}assets/live.js" data-root="{{ root }}" defer></script>
</body></html>
"""

INDEX = (
    _HEAD.replace("{% block title %}{% endblock %}", "actions · {{ project }}")
    + """<h1>Actions · {{ project }}</h1>
<div class="meta">each action shows its plan first; it runs as a recorded run, like the CLI</div>
</header><main>
{% if disabled %}<p class="refusal" id="disabled">{{ disabled }}</p>{% endif %}
<div id="live-actions" data-live>
{% for env in envs %}
<section class="actions-env" aria-labelledby="env-{{ env }}">
<h2 id="env-{{ env }}">{{ env }}</h2>
{% if not disabled %}
<a class="btn" href="{{ act(kind="apply", env=env) }}">apply {{ env }}</a>
<a class="btn" href="{{ act(kind="heal", env=env) }}">heal drift in {{ env }}</a>
{% for source, target in promotions if source == env %}
<a class="btn" href="{{ act(kind="promote", env=source, target=target) }}">promote
{{ source }} → {{ target }}</a>
{% endfor %}{% endif %}
<div class="scroll"><table>
<thead><tr><th scope="col">service</th><th scope="col">status</th><th scope="col">release</th>
<th scope="col">actions</th></tr></thead><tbody>
{% for service in matrix.services %}{% set c = matrix.cells[env].get(service) %}{% if c %}
<tr data-env="{{ env }}" data-service="{{ service }}">
<th scope="row">{{ service }}</th>
<td><span class="st {{ c.status }}">{{ labels[c.status] }}</span>
{% if c.status_why %}<div class="why">{{ c.status_why }}</div>{% endif %}</td>
<td class="mono">{{ c.release.id if c.release else "-" }}</td>
<td>{% if not disabled %}
<a class="btn" href="{{ act(kind="apply", env=env, service=service) }}">apply</a>
{% if c.status == "blocked" or c.last_failed %}
<a class="btn" href="{{ act(kind="retry", env=env, service=service) }}">retry</a>{% endif %}
{% if c.release %}<a class="btn rollback"
 href="{{ url("actions/rollback", env=env, service=service) }}">roll back…</a>{% endif %}
{% else %}<span class="muted">read-only</span>{% endif %}</td>
</tr>{% endif %}{% endfor %}
</tbody></table></div>
</section>
{% endfor %}
</div>
</main>"""
    + _FOOT
)

RELEASES = (
    _HEAD.replace("{% block title %}{% endblock %}", "roll back {{ service }} in {{ env }}")
    + """<h1>Roll back {{ service }} in {{ env }}</h1>
<div class="meta">pick the release to go back to: its image, values and files come back as a
new commit and are rolled out</div></header><main>
{% if disabled %}<p class="refusal">{{ disabled }}</p>{% endif %}
<div class="scroll"><table id="releases">
<thead><tr><th scope="col">release</th><th scope="col">outcome</th><th scope="col">when</th>
<th scope="col">template</th><th scope="col">image</th><th scope="col">by</th>
<th scope="col"></th></tr></thead><tbody>
{% for e in entries %}
<tr data-release="{{ e.release }}"><td class="mono">{{ e.release }}</td>
<td><span class="badge {{ e.outcome }}">{{ e.outcome }}</span></td><td>{{ e.at }}</td>
<td>{{ e.template_tag }}</td><td class="mono">{{ e.image }}</td><td>{{ e.actor }}</td>
<td>{% if e.release == current %}<span class="muted">current</span>{% elif not disabled %}
<a class="btn" href="{{ act(kind="rollback", env=env, service=service, release=e.release) }}"
>roll back to this</a>{% endif %}</td></tr>
{% else %}<tr><td colspan="7" class="muted">no releases</td></tr>{% endfor %}
</tbody></table></div></main>"""
    + _FOOT
)

CONFIRM = (
    _HEAD.replace("{% block title %}{% endblock %}", "{{ p.title }}")
    + """<h1>{{ p.title }}</h1>
<div class="meta">nothing has run yet: this is the plan; it runs only as shown</div>
</header><main>
{% if changed %}<p class="refusal" id="changed">The plan changed since it was shown, so nothing
ran. This is the plan now: confirm again if it is still what you want.</p>{% endif %}
{% for w in p.warnings %}<p class="warning">{{ w }}</p>{% endfor %}
<section aria-labelledby="plan-title"><h2 id="plan-title">Plan</h2>
<div class="plan" id="plan">
{% set plan = p.plan %}{% set kind = p.request.kind %}
{% if kind in ("apply", "retry") %}
  {% if not plan.summary.changes %}<p>No changes: the run will record that nothing was
  to do.</p>{% endif %}
  <ul>{% for s in plan.services if s.action not in ("noop",) %}
  <li><span class="svc">{{ s.service }}</span>: {{ s.action }}{% if s.reasons %}
  ({{ s.reasons|join(", ") }}){% endif %}
  {% if s.blocked %}<div class="why">blocked: {{ s.blocked }}</div>{% endif %}
  <ul>
  {% if s.template.from != s.template.to %}<li>template {{ s.template.from or "-" }} →
  {{ s.template.to or "-" }}</li>{% endif %}
  {% if s.image.from != s.image.to %}<li>image <code>{{ s.image.from or "-" }}</code> →
  <code>{{ s.image.to or "-" }}</code></li>{% endif %}
  {% if s.replicas %}<li>replicas {{ s.replicas.from }} → {{ s.replicas.to }}</li>{% endif %}
  {% for k, v in s["values"].changed.items() %}<li>{{ k }}: {{ v }}</li>{% endfor %}
  {% for k, v in s["values"].added.items() %}<li>+ {{ k }}: {{ v }}</li>{% endfor %}
  {% for k, v in s["values"].removed.items() %}<li>− {{ k }}: {{ v }}</li>{% endfor %}
  </ul>
  {% for name, diff in s.files.items() %}<details><summary>{{ name }}</summary>
  <pre>{{ diff }}</pre></details>{% endfor %}
  </li>{% endfor %}</ul>
  {% if plan.summary.unchanged %}<p class="muted">unchanged:
  {{ plan.summary.unchanged|join(", ") }}</p>{% endif %}
{% elif kind == "rollback" %}
  <table><thead><tr><th scope="col"></th><th scope="col">now</th>
  <th scope="col">after</th></tr></thead>
  <tbody>
  <tr><th scope="row">release</th><td class="mono">{{ plan["from"].release }}
  ({{ plan["from"].outcome }})</td><td class="mono">{{ plan["to"].release }}
  ({{ plan["to"].outcome }})</td></tr>
  <tr><th scope="row">template</th><td>{{ plan["from"].template }}</td>
  <td>{{ plan["to"].template }}</td></tr>
  <tr><th scope="row">image</th><td class="mono">{{ plan["from"].image }}</td>
  <td class="mono">{{ plan["to"].image }}</td></tr>
  <tr><th scope="row">replicas</th><td>{{ plan["from"].replicas }}</td>
  <td>{{ plan["to"].replicas }}</td></tr>
  </tbody></table>
  {% if plan["values"] %}<h3>values</h3><ul>{% for k, v in plan["values"].items() %}
  <li>{{ k }}: {{ v["from"] }} → {{ v["to"] }}</li>{% endfor %}</ul>{% endif %}
  {% if plan.files %}<p>files that change: {{ plan.files|join(", ") }}</p>{% endif %}
  {% if plan.rollout %}<p>It is rolled out and waited for; the release rolled back from stays
  blocked until its inputs change or it is retried.</p>
  {% else %}<p>Committed to the deploy repo (no platform).</p>{% endif %}
{% elif kind == "heal" %}
  {% if plan.drift %}<p>Put back the deploy repo's releases where the last reconcile found
  drift:</p>
  <ul>{% for d in plan.drift %}<li>{{ d.service }} ({{ plan.releases.get(d.service) }}):
  {{ d.field }}: live {{ d.live or "-" }} → {{ d.desired or "-" }}</li>{% endfor %}</ul>
  {% else %}<p>The last reconcile found no drift. Healing checks again and puts back
  whatever differs from the deploy repo's releases.</p>{% endif %}
  {% if plan.unknown %}<p class="muted">drift not known for:
  {% for s, why in plan.unknown.items() %}{{ s }} ({{ why }}){{ ", " if not loop.last }}
  {% endfor %}</p>{% endif %}
{% else %}
  {% if plan.nothing %}<p>{{ plan.message }}</p>{% else %}
  <p>Merge request <strong>{{ plan.title }}</strong>: branch <code>{{ plan.branch }}</code> →
  <code>{{ plan.target_branch }}</code></p>
  <ul>{% for name, pin in plan.services.items() %}<li><span class="svc">{{ name }}</span>:
  template {{ pin.template["from"] }} → {{ pin.template["to"] }}, image
  <code>{{ pin.image["from"] }}</code> → <code>{{ pin.image["to"] }}</code>
  (release {{ pin.release }}){% for d in pin.downgrades %}
  <br><strong class="downgrade">downgrade: {{ d.what }} {{ d["from"] }} → {{ d["to"] }}
  ({{ d.why }})</strong>{% endfor %}</li>{% endfor %}</ul>{% endif %}
  {% if plan.skipped %}<p class="muted">skipped:
  {% for s, why in plan.skipped.items() %}{{ s }} ({{ why }}){{ "; " if not loop.last }}
  {% endfor %}</p>{% endif %}
{% endif %}
</div></section>
<form method="post" action="{{ root }}actions" id="confirm-form">
{% for name, value in p.request.to_json().items() if value %}
<input type="hidden" name="{{ name }}" value="{{ value }}">{% endfor %}
<input type="hidden" name="digest" value="{{ p.digest }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
<input type="hidden" name="form" value="{{ form_id }}">
<button type="submit" class="go" id="confirm">{{ p.verb }}</button>
<a class="btn" href="{{ root }}actions">cancel</a>
</form>
</main>"""
    + _FOOT
)

JOB = (
    _HEAD.replace("{% block title %}{% endblock %}", "{{ job.payload.title or job.kind }}")
    + """<h1>{{ job.payload.title or job.kind }}</h1>
<div class="meta">by {{ job.payload.actor }} · received {{ job.received_at }}</div>
</header><main>
<dl class="legend">
<dt>action</dt><dd class="state" id="state" data-state="{{ job.state }}">{{ job.state }}</dd>
<dt>run</dt><dd id="run">{% for r in job.runs %}<a href="{{ root }}runs/{{ r }}">{{ r }}</a>
{% else %}not started yet{% endfor %}</dd>
<dt>outcome</dt><dd id="outcome" class="state">{{ job.note if job.state in ("done", "failed",
 "ignored") else "…" }}</dd>
</dl>
<h2>Log</h2>
<pre class="log" id="log" aria-live="polite"
 data-stream="{{ root }}events/jobs/{{ job.id|urlencode }}"></pre>
</main>"""
    + _FOOT
)

REFUSED = (
    _HEAD.replace("{% block title %}{% endblock %}", "refused")
    + """<h1>Not done</h1></header><main>
<p class="refusal" id="refusal">{{ why }}</p>
<p><a href="{{ root }}actions">back to the actions</a></p></main>"""
    + _FOOT
)


@cache
def _env() -> Environment:
    return Environment(autoescape=select_autoescape(default=True, default_for_string=True))


def _render(template: str, *, root: str, **context: Any) -> str:
    def url(path: str, **params: str | None) -> str:
        query = urlencode({k: v for k, v in params.items() if v})
        return f"{root}{path}" + (f"?{query}" if query else "")

    def act(**params: str | None) -> str:
        return url("actions/confirm", **params)

    return (
        _env()
        .from_string(template)
        .render(
            style=STYLE,
            action_style=ACTION_STYLE,
            labels=LABELS,
            root=root,
            url=url,
            act=act,
            **context,
        )
    )


def render_index(**context: Any) -> str:
    return _render(INDEX, **context)


def render_releases(**context: Any) -> str:
    return _render(RELEASES, **context)


def render_confirm(*, proposal: Any, **context: Any) -> str:
    return _render(CONFIRM, p=proposal, **context)


def render_job(**context: Any) -> str:
    return _render(JOB, **context)


def render_refused(**context: Any) -> str:
    return _render(REFUSED, **context)
