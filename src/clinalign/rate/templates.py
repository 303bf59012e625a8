"""Server-rendered pages. Jinja2 autoescaping is on for every template, so a note holding ``<script>``
shows as text; the only script is inline, tiny, and allowed by a per-response CSP nonce."""

from __future__ import annotations

from jinja2 import DictLoader, Environment, select_autoescape

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}clinalign rate{% endblock %}</title>
<style nonce="{{ nonce }}">
:root { --ink:#1d2733; --muted:#5b6775; --line:#d5dbe3; --accent:#1f6feb; --bg:#f6f8fa; --ok:#1a7f37; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--ink);
       background:var(--bg); }
header { display:flex; align-items:center; gap:1rem; padding:.6rem 1.2rem; background:#fff;
         border-bottom:1px solid var(--line); }
header .brand { font-weight:700; } header .who { margin-left:auto; color:var(--muted); }
main { max-width:1200px; margin:1rem auto; padding:0 1.2rem; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:1rem 1.2rem; margin-bottom:1rem; }
h1 { font-size:1.3rem; margin:.2rem 0 1rem; } h2 { font-size:1.05rem; margin:.2rem 0 .6rem; }
.cols { display:grid; grid-template-columns:1fr 1fr; gap:1rem; }
.text { white-space:pre-wrap; overflow-wrap:anywhere; max-height:55vh; overflow:auto; background:var(--bg);
        border:1px solid var(--line); border-radius:6px; padding:.7rem .8rem; font-size:14px; }
.progress { height:10px; background:#e6eaef; border-radius:5px; overflow:hidden; min-width:120px; }
.progress > span { display:block; height:100%; background:var(--ok); }
.muted { color:var(--muted); } .err { color:#b42318; }
.scale { display:flex; gap:.5rem; flex-wrap:wrap; margin:.4rem 0 .8rem; }
.scale label { border:1px solid var(--line); border-radius:6px; padding:.45rem .8rem; cursor:pointer; background:#fff; }
.scale input { margin-right:.35rem; }
.scale label:has(input:checked) { border-color:var(--accent); background:#eaf2ff; font-weight:600; }
kbd { font:12px ui-monospace, monospace; border:1px solid var(--line); border-bottom-width:2px; border-radius:4px;
      padding:0 .3rem; background:#fff; }
textarea { width:100%; min-height:3.2rem; font:inherit; padding:.4rem; border:1px solid var(--line); border-radius:6px; }
button { font:inherit; padding:.45rem 1.1rem; border-radius:6px; border:1px solid var(--accent); background:var(--accent);
         color:#fff; cursor:pointer; } button.link { background:none; color:var(--accent); border:none; padding:0; }
table { border-collapse:collapse; width:100%; } th, td { text-align:left; padding:.35rem .6rem; border-bottom:1px solid var(--line); }
.rubric { white-space:pre-wrap; font-size:13px; color:var(--muted); margin:.2rem 0 .4rem; }
.nav { display:flex; gap:1rem; align-items:center; } .nav a { color:var(--accent); text-decoration:none; }
.saved { color:var(--ok); font-weight:600; }
@media (max-width: 800px) { .cols { grid-template-columns:1fr; } }
</style></head><body>
<header><span class="brand">clinalign rate</span>{% block head %}{% endblock %}
{% if who %}<span class="who">signed in as <b>{{ who }}</b></span>
<form method="post" action="/logout"><input type="hidden" name="csrf" value="{{ csrf }}">
<button class="link" type="submit">sign out</button></form>{% endif %}</header>
<main>{% block main %}{% endblock %}</main>
{% block script %}{% endblock %}
</body></html>"""

LOGIN = """{% extends "base" %}{% block main %}
<div class="card" style="max-width:480px">
<h1>Sign in</h1>
<p class="muted">Paste the personal token your study administrator gave you.</p>
{% if error %}<p class="err">{{ error }}</p>{% endif %}
<form method="post" action="/login">
<input type="hidden" name="csrf" value="{{ csrf }}">
<p><input name="token" type="password" autocomplete="off" autofocus required style="width:100%;padding:.45rem"
          aria-label="token"></p>
<button type="submit">Sign in</button></form></div>
{% endblock %}"""

HOME = """{% extends "base" %}{% block main %}
<h1>Your rating campaigns</h1>
{% for c in campaigns %}<div class="card"><div class="nav">
<h2 style="margin:0"><a href="/c/{{ c.id }}">{{ c.name }}</a></h2><span class="muted">{{ c.kind }}</span>
<span class="muted" style="margin-left:auto">{{ c.done }} of {{ c.total }} done</span>
<div class="progress" style="width:200px"><span style="width:{{ (100 * c.done / c.total) | round(1) }}%"></span></div>
</div></div>{% else %}<p class="muted">No campaigns are assigned to you yet; the study administrator assigns
them.</p>{% endfor %}
{% endblock %}"""

PROGRESS = """<div class="card"><div class="nav">
<a href="/">&larr; campaigns</a><b>{{ campaign.name }}</b>
<span class="muted">item {{ pos }} of {{ total }}</span>
{% if pos > 1 %}<a href="/c/{{ campaign.id }}/{{ pos - 1 }}" id="prev">previous</a>{% endif %}
{% if pos < total %}<a href="/c/{{ campaign.id }}/{{ pos + 1 }}" id="next">next</a>{% endif %}
<span class="muted" style="margin-left:auto" id="left">{{ total - done }} left</span>
<div class="progress" style="width:240px" role="progressbar" aria-valuenow="{{ done }}" aria-valuemax="{{ total }}">
<span style="width:{{ (100 * done / total) | round(1) }}%"></span></div></div></div>"""

LIKERT = """{% extends "base" %}{% block main %}""" + PROGRESS + """
<div class="cols">
<div class="card"><h2>Source note</h2><div class="text" id="source">{{ item.source }}</div></div>
<div class="card"><h2>Summary</h2><div class="text" id="output">{{ item.output }}</div></div>
</div>
<form class="card" method="post" action="/c/{{ campaign.id }}/{{ pos }}" id="rate">
<input type="hidden" name="csrf" value="{{ csrf }}">
<h2>How good is this summary? {% if current %}<span class="saved" id="saved">saved: {{ current.score }}</span>{% endif %}</h2>
<div class="rubric">{{ campaign.rubric }}</div>
<div class="scale">{% for s in range(1, 6) %}
<label><input type="radio" name="score" value="{{ s }}" data-key="{{ s }}" required
 {% if current and current.score == s %}checked{% endif %}>{{ s }}</label>{% endfor %}</div>
<p><textarea name="comment" maxlength="{{ max_comment }}" placeholder="Optional comment">{{ current.comment if current else "" }}</textarea></p>
<button type="submit">Save and next</button>
<span class="muted">Keys: <kbd>1</kbd>-<kbd>5</kbd> score, <kbd>Enter</kbd> save and next,
<kbd>Ctrl</kbd>+<kbd>Enter</kbd> from the comment box.</span>
</form>{% endblock %}
{% block script %}""" + "{% include 'keys' %}" + "{% endblock %}"

PAIRWISE = """{% extends "base" %}{% block main %}""" + PROGRESS + """
<div class="card"><h2>Prompt</h2><div class="text" id="prompt">{{ item.prompt }}</div></div>
<div class="cols">
<div class="card"><h2>Answer A</h2><div class="text" id="output-a">{{ left }}</div></div>
<div class="card"><h2>Answer B</h2><div class="text" id="output-b">{{ right }}</div></div>
</div>
<form class="card" method="post" action="/c/{{ campaign.id }}/{{ pos }}" id="rate">
<input type="hidden" name="csrf" value="{{ csrf }}">
<h2>Which answer is better? {% if current %}<span class="saved" id="saved">saved: {{ current_display }}</span>{% endif %}</h2>
<div class="scale">{% for value, key, label in [("A", "a", "A is better"), ("B", "b", "B is better"), ("tie", "t", "Tie")] %}
<label><input type="radio" name="choice" value="{{ value }}" data-key="{{ key }}" required
 {% if current_display == value %}checked{% endif %}>{{ label }} <kbd>{{ key | upper }}</kbd></label>{% endfor %}</div>
<p><textarea name="comment" maxlength="{{ max_comment }}" placeholder="Optional reason">{{ current.comment if current else "" }}</textarea></p>
<button type="submit">Save and next</button>
<span class="muted">Keys: <kbd>A</kbd>/<kbd>B</kbd>/<kbd>T</kbd> choose, <kbd>Enter</kbd> save and next.</span>
</form>{% endblock %}
{% block script %}""" + "{% include 'keys' %}" + "{% endblock %}"

KEYS = """<script nonce="{{ nonce }}">
(function () {
  var form = document.getElementById("rate");
  document.addEventListener("keydown", function (e) {
    var t = e.target, typing = t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" && t.type !== "radio");
    if (typing) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
      if (e.key === "Escape") { t.blur(); }
      return;
    }
    if (e.altKey || e.ctrlKey || e.metaKey) { return; }
    var r = form.querySelector('input[type=radio][data-key="' + e.key.toLowerCase() + '"]');
    if (r) { r.checked = true; e.preventDefault(); return; }
    if (e.key === "Enter") { e.preventDefault(); form.requestSubmit(); }
  });
})();
</script>"""

DONE = """{% extends "base" %}{% block main %}
<div class="card"><h1>All {{ total }} items of {{ campaign.name }} are rated. Thank you.</h1>
<p>You can <a href="/c/{{ campaign.id }}/1">review or change</a> your answers, or go back to
<a href="/">your campaigns</a>.</p></div>{% endblock %}"""

ADMIN = """{% extends "base" %}{% block main %}
<h1>Administration</h1>
{% for c in campaigns %}<div class="card" id="campaign-{{ c.id }}">
<h2>{{ c.name }} <span class="muted">(campaign {{ c.id }}, {{ c.kind }}, {{ c.n_items }} items)</span></h2>
<table><tr><th>Rater</th><th>Done</th><th style="width:40%">Progress</th><th>Order seed</th><th>Assigned</th></tr>
{% for r in c.raters %}<tr><td>{{ r.name }}</td><td>{{ r.done }} / {{ c.n_items }}</td>
<td><div class="progress"><span style="width:{{ (100 * r.done / c.n_items) | round(1) }}%"></span></div></td>
<td class="muted">{{ r.seed if r.seed is not none else "not started" }}</td>
<td>{{ "yes" if r.assigned else "no (ratings kept)" }}</td></tr>
{% else %}<tr><td colspan="5" class="muted">No raters assigned yet.</td></tr>{% endfor %}</table>
<p class="muted" id="unassigned-{{ c.id }}">{% if c.unassigned %}Not assigned: {{ c.unassigned | join(", ") }}.
{% endif %}Assign with <code>clinalign rate assign "{{ c.name }}" RATER...</code>, remove with
<code>clinalign rate unassign</code>.</p>
<p><b>{{ c.agreement_name }}</b>:
{% if c.agreement is not none %}{{ "%.3f" | format(c.agreement) }} <span class="muted">over {{ c.shared }} items with
two or more raters</span>{% else %}<span class="muted">not yet defined ({{ c.shared }} items with two or more raters,
and raters must use more than one value)</span>{% endif %}</p>
{% if c.damaged %}<p class="err" id="damaged">Items rows {{ c.damaged | join(", ") }} hold damaged data and are
left out of the numbers below; the server log says what is wrong with each.</p>{% endif %}
{% if c.systems %}<table><tr><th>System (unblinded)</th>{% for h in c.system_header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in c.systems %}<tr>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
</div>{% else %}<p class="muted">No campaigns. Create one with <code>clinalign rate create-campaign</code>.</p>{% endfor %}
{% endblock %}"""

ERROR = """{% extends "base" %}{% block main %}
<div class="card"><h1>{{ status }}: {{ title }}</h1><p class="err" id="error">{{ message }}</p>
<p><a href="/">Back to your campaigns</a></p></div>{% endblock %}"""

ENV = Environment(
    loader=DictLoader({"base": BASE, "login": LOGIN, "home": HOME, "likert": LIKERT, "pairwise": PAIRWISE,
                       "keys": KEYS, "done": DONE, "admin": ADMIN, "error": ERROR}),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def render(name: str, **ctx: object) -> str:
    return ENV.get_template(name).render(**ctx)
