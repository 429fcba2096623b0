"""Readable console output of a verdict (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .models import Question, Verdict


def print_verdict(v: Verdict, q: Question, console: Console | None = None) -> None:
    c = console or Console()
    if v.status != "scored":
        c.print(f"[bold red]UNSCORED[/bold red] {v.question_id}: {v.reason}")
    else:
        cal = f"  (calibrated with {v.provenance.calibration})" if v.provenance.calibration else ""
        c.print(
            f"[bold]{v.question_id}[/bold]: [bold green]{v.score:g}[/bold green] / {v.scale_max:g}"
            f"  ({v.score_100:.0f}/100){cal}"
        )
    if any(cr.level is not None or cr.evidence or cr.reason for cr in v.criteria):
        t = Table("criterion", "weight", "level 0-4", "probabilities", "evidence", "reason")
        for cr in v.criteria:
            probs = " ".join(f"{k}:{p:.2f}" for k, p in (cr.probabilities or {}).items())
            ev = cr.evidence
            if ev and cr.evidence_supported is False:
                ev = f"[red]{ev} (not in answer)[/red]"
            t.add_row(cr.id, f"{cr.weight:g}", "-" if cr.level is None else f"{cr.level:.2f}", probs, ev, cr.reason)
        c.print(t)
    for name, view in v.views.items():
        probs = " ".join(f"{k}:{p:.2f}" for k, p in (view.get("probabilities") or {}).items())
        c.print(f"reading {name}: {view['expected']:.2f} / 5  ({probs})")
    if v.holistic_level is not None:
        c.print(f"overall level: {v.holistic_level:.2f} / 4")
    for r in v.red_flags:
        p = f" p={r.probability:.2f}" if r.probability is not None else ""
        label = "[red]red flag[/red]" if r.hit else "[yellow]possible red flag (below threshold, no effect)[/yellow]"
        c.print(f"{label} {r.id} ({r.effect.value} {r.value:g}){p} {r.evidence}")
    if v.rationale:
        c.print(f"[italic]{v.rationale}[/italic]")
    if v.similarity:
        kp = f", key-point coverage {v.similarity.key_point_coverage:.2f}" if v.similarity.key_point_coverage else ""
        c.print(f"similarity to reference: {v.similarity.best_reference:.2f}{kp}")
    for f in v.review_flags:
        c.print(f"[yellow]review[/yellow] {f.code}: {f.reason}")
    u = v.usage
    c.print(
        f"[dim]{u.calls} judge calls, {u.prompt_tokens} prompt + {u.completion_tokens} generated tokens, "
        f"{u.seconds:.1f} s; judge {v.provenance.judge_backend}:{v.provenance.judge_model} "
        f"({v.provenance.judge_mode}); rubric {v.provenance.rubric_id} v{v.provenance.rubric_version}[/dim]"
    )
