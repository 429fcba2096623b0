"""The calibration report as one self-contained HTML page (plots inlined), built from metrics.json's report dict."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from . import agreement


def fmt_cell(cell: dict) -> str:
    """One metric cell, `value [low, high]`, as the console table and the page show it."""
    v, ci = cell["value"], cell["ci95"]
    if v is None:
        return "-"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else f"{v:.3f}"


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def calibration_html(r: dict, plots: dict[str, Path]) -> str:
    """The page for report `r` (as written to metrics.json), with each plot PNG embedded under its name."""
    e = html.escape
    heads = ["evaluator (raw)", "calibrated, question-grouped CV", "calibrated, seen questions"]
    keys = ["uncalibrated", "calibrated_question_grouped_cv", "calibrated_seen_questions_cv"]
    if "human_ceiling" in r:
        heads.append("human vs human (ceiling)")
        keys.append("human_ceiling")
    rows = "".join(
        f"<tr><td>{m}</td>" + "".join(f"<td>{e(fmt_cell(r[k][m]))}</td>" for k in keys) + "</tr>"
        for m in agreement.METRICS
    )
    perq = "".join(
        f"<tr><td>{e(q)}</td><td>{d['n']}</td><td>{d['pearson']}</td><td>{d['mae']}</td><td>{d['bias']}</td></tr>"
        for q, d in r["per_question"].items()
    )
    worst = "".join(
        f"<tr><td>{e(q)}</td><td>{x['human']}</td><td>{x['evaluator']}</td><td>{e(x['answer'])}</td></tr>"
        for q, xs in r["most_disagreement"].items()
        for x in xs
    )
    imgs = "".join(
        f'<figure><img src="{_img(p)}" alt="{k}"><figcaption>{k}</figcaption></figure>' for k, p in plots.items()
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Agreement with human grades</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}}figure{{display:inline-block;margin:.5em}}
img{{max-width:520px}}</style></head><body>
<h1>Agreement with human grades</h1>
<p>{r["n_joined"]} answers joined; scale {r["scale"][0]:g}-{r["scale"][1]:g}; official grade: {e(r["official"])};
{r["unscored_excluded"]} unscored excluded; {r["verdicts_without_grade"]} verdicts without a grade,
{r["grades_without_verdict"]} grades without a verdict. Intervals: 95% bootstrap, resampling questions.
Calibrated figures are out of sample (the mapping never saw the question it scores).</p>
<table><tr><th>metric</th>{"".join(f"<th>{h}</th>" for h in heads)}</tr>{rows}</table>
<p>Mapping: {e(r["mapping"]["kind"])}, id {e(r["mapping"]["id"])}, saved to {e(r["mapping"]["path"])}.</p>
<h2>Plots</h2>{imgs}
<h2>Bias checks</h2><pre>{e(json.dumps(r["bias"], indent=2))}</pre>
<h2>Questions with the most disagreement</h2><table><tr><th>question</th><th>human</th><th>evaluator</th>
<th>answer</th></tr>{worst}</table>
<h2>Per question</h2><table><tr><th>question</th><th>n</th><th>pearson</th><th>MAE</th><th>bias</th></tr>{perq}</table>
</body></html>"""
