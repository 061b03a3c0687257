"""report.html: one self-contained file (no network: styles, scripts, plots and data inlined).

- the summary table, sortable by any column (click a header);
- the curves (accuracy and ACU against mean tokens, 95 % error bars, the Pareto front) and the token-length
  distribution per point, as inline SVG;
- a sample browser: pick a problem, read its responses at every point side by side with token counts and
  verdicts; "verdict flips only" keeps the problems whose verdict differs between points.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from cotbench.files import write_text
from cotbench.records import Sample
from cotbench.report.tables import point_label

MAX_RESPONSE_CHARS = 20_000  # per response in the browser; the full text is in samples.jsonl

_COLUMNS = [("task", "task"), ("model", "model"), ("valve", "valve"), ("method", "method"), ("point", "point"),
            ("n", "n"), ("n_graded", "graded"), ("n_timeout", "timeout"), ("n_error", "error"),
            ("n_truncated_no_answer", "cut, no answer"), ("accuracy_pct", "accuracy %"),
            ("accuracy_ci", "95% CI"), ("mean_tokens", "mean tokens"), ("mean_tokens_ci", "95% CI"),
            ("truncation_pct", "truncated %"), ("accuracy_non_truncated_pct", "acc. given completion %"),
            ("acu", "ACU"), ("acu_ci", "95% CI"), ("accuracy_change_pct", "Δacc vs base"),
            ("accuracy_change_by_completion_pct", "of which by completion"),
            ("accuracy_change_by_answers_pct", "of which by answers"), ("mcnemar_p_holm", "McNemar p (Holm)"),
            ("samples_per_problem", "K"), ("pass_at_k_pct", "pass@K %"), ("maj_at_k_pct", "maj@K %"),
            ("wilcoxon_p_holm", "Wilcoxon p (Holm, K > 1)"),
            ("token_reduction_ratio", "× shorter"), ("ockscore", "OckScore"), ("on_pareto", "Pareto")]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f2f2f2;cursor:pointer;user-select:none}td:nth-child(-n+5){text-align:left}tr.incomplete td{color:#a60}
.plots svg{max-width:100%;height:auto}.grid{display:flex;gap:8px;overflow-x:auto}
.cell{flex:1 0 260px;border:1px solid #ccc;padding:6px;font-size:.8em}.cell pre{white-space:pre-wrap;max-height:28em;overflow:auto}
.right{color:#070}.wrong{color:#b00}.note{color:#666;font-size:.85em}
"""

_SCRIPT = """
const DATA = JSON.parse(document.getElementById('data').textContent);
function sortBy(th){const table=th.closest('table');const i=[...th.parentNode.children].indexOf(th);
 const asc=th.dataset.order!=='asc';th.dataset.order=asc?'asc':'desc';const body=table.tBodies[0];
 const rows=[...body.rows];const key=r=>{const v=r.cells[i].dataset.v;const n=parseFloat(v);return isNaN(n)?v:n};
 rows.sort((a,b)=>{const x=key(a),y=key(b);return (x>y?1:x<y?-1:0)*(asc?1:-1)});rows.forEach(r=>body.appendChild(r));}
document.querySelectorAll('#summary th').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
const pick=document.getElementById('problem'),flips=document.getElementById('flips'),view=document.getElementById('responses');
function flipped(p){const v=new Set(DATA.samples[p].filter(s=>s.correct!==null).map(s=>s.correct));return v.size>1}
function fill(){const keep=Object.keys(DATA.samples).filter(p=>!flips.checked||flipped(p));pick.innerHTML='';
 keep.forEach(p=>{const o=document.createElement('option');o.value=p;o.textContent=p+': '+DATA.questions[p].slice(0,90);pick.appendChild(o)});
 document.getElementById('count').textContent=keep.length+' problems';show();}
function show(){view.innerHTML='';const p=pick.value;if(!p)return;
 document.getElementById('question').textContent=DATA.questions[p]+'  (gold: '+DATA.golds[p]+')';
 DATA.samples[p].forEach(s=>{const d=document.createElement('div');d.className='cell';
  const h=document.createElement('div');h.innerHTML='<b></b> · '+s.tokens+' tokens · <span class="'+(s.correct?'right':'wrong')+'"></span>';
  h.querySelector('b').textContent=s.point;h.querySelector('span').textContent=s.correct===null?'not graded':(s.correct?'correct':'wrong')+' ('+s.extracted+')';
  const pre=document.createElement('pre');pre.textContent=s.response;d.appendChild(h);d.appendChild(pre);view.appendChild(d);});}
pick.addEventListener('change',show);flips.addEventListener('change',fill);fill();
"""


def write_html_report(out_dir: Path, summary: pd.DataFrame, samples: Sequence[Sample], run: dict,
                      svgs: Sequence[Path]) -> Path:
    path = out_dir / "report.html"
    write_text(path, render(summary, samples, run, svgs))
    return path


def render(summary: pd.DataFrame, samples: Sequence[Sample], run: dict, svgs: Sequence[Path]) -> str:
    config = run.get("config", {})
    data = {"samples": {}, "questions": {}, "golds": {}}
    several = len({(s.model, s.valve) for s in samples}) > 1  # a comparison: say whose response each is
    for s in sorted(samples, key=lambda s: (s.problem.task, s.problem.problem_id, s.model, s.method,
                                            s.knob if s.knob is not None else -1e9)):
        pid = f"{s.problem.task}/{s.problem.problem_id}"
        data["questions"][pid], data["golds"][pid] = s.problem.question, s.problem.gold
        point = point_label({"method": s.method, "alpha": s.alpha if s.alpha is not None else float("nan"),
                        "knob": s.knob if s.knob is not None else float("nan")})
        data["samples"].setdefault(pid, []).append({
            "point": (f"{s.model} · " if several else "") + (point if s.method == "valve" else f"{s.method} {point}")
            + (f" · sample {s.sample_index}" if s.sample_index else ""),
            "tokens": s.generation.n_generated_tokens,
            "correct": None if s.grade is None or not s.grade.judged else bool(s.grade.correct),
            "extracted": (s.grade.extracted if s.grade else None) or "", "response": s.generation.text[:MAX_RESPONSE_CHARS]})
    # every "<" escaped inside the script: no "</script>" and no "<!--" (which would change how the rest of the
    # script block is parsed) can come from a response's text
    payload = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    head = (f"<p>model <code>{html.escape(str(run.get('model_id', config.get('model'))))}</code>, valve "
            f"<code>{html.escape(str(run.get('valve_id') or 'none'))}</code>; tasks "
            f"{html.escape(', '.join(config.get('tasks', [])))}; max_new_tokens {config.get('max_new_tokens')}; "
            f"grading <code>{html.escape(str(config.get('protocol')))}</code>. ACU = 100 × accuracy[%] / "
            "(params[billions] × mean generated tokens), as the CoT-Valve paper prints it.</p>")
    plots = "".join(f"<div class='plots'>{_svg(p)}</div>" for p in svgs)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>cotbench report</title>"
            f"<style>{_STYLE}</style></head><body><h1>cotbench report</h1>{head}"
            f"<h2>Summary</h2>{_table(summary)}<p class='note'>Click a header to sort. Rows in orange have samples "
            "not graded yet or timed out: their figures cover the judged samples only. Intervals are 95 %: Wilson "
            "for accuracy, bootstrap over problems for the rest.</p>"
            f"<h2>Curves</h2>{plots}"
            "<h2>Samples</h2><p><label><input type='checkbox' id='flips'> verdict flips only</label> · "
            "<span id='count'></span></p><p><select id='problem'></select></p><p id='question'></p>"
            "<div class='grid' id='responses'></div>"
            f"<script type='application/json' id='data'>{payload}</script><script>{_SCRIPT}</script></body></html>")


def _table(summary: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in _COLUMNS)
    rows = []
    for _, r in summary.iterrows():
        cells = []
        for column, _ in _COLUMNS:
            if column == "point":
                value = point_label(r) + ("" if bool(r.get("complete", True)) else " *")
            elif column.endswith("_ci"):
                low, high = r.get(f"{column}_low"), r.get(f"{column}_high")
                value = "" if low is None or pd.isna(low) else f"[{low:.3g}, {high:.3g}]"
            else:
                value = r.get(column)
            shown = "" if value is None or (isinstance(value, float) and pd.isna(value)) else (
                f"{value:.4g}" if isinstance(value, float) else str(value))
            cells.append(f"<td data-v='{html.escape(shown, quote=True)}'>{html.escape(shown)}</td>")
        css = "" if bool(r.get("complete", True)) else " class='incomplete'"
        rows.append(f"<tr{css}>{''.join(cells)}</tr>")
    return f"<table id='summary'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _svg(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)  # matplotlib's RDF block: no use inline
    return text[text.find("<svg"):] if "<svg" in text else ""
