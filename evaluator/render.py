"""Readable console output (rich): a verdict, a bank question, the progress bar of a batch."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .key_points import key_points_of, points_required_of
from .models import Question, Verdict
from .resources import LoadedEvalSet

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress

    from .batch import Progress


def print_verdict(v: Verdict, q: Question, console: Console | None = None) -> None:
    c = console or Console()
    if v.status != "scored":
        c.print(f"[bold red]UNSCORED[/bold red] {v.question_id}: {escape(v.reason)}")
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
            # Evidence, reasons and flags quote the candidate: escaped, so an answer cannot style or link the console.
            ev = escape(cr.evidence)
            if ev and cr.evidence_supported is False:
                ev = f"[red]{ev} (not in answer)[/red]"
            level = "-" if cr.level is None else f"{cr.level:.2f}"
            t.add_row(cr.id, f"{cr.weight:g}", level, probs, ev, escape(cr.reason))
        c.print(t)
    for name, view in v.views.items():
        probs = " ".join(f"{k}:{p:.2f}" for k, p in (view.get("probabilities") or {}).items())
        c.print(f"reading {name}: {view['expected']:.2f} / 5  ({probs})")
    if v.holistic_level is not None:
        c.print(f"overall level: {v.holistic_level:.2f} / 4")
    for r in v.red_flags:
        p = f" p={r.probability:.2f}" if r.probability is not None else ""
        label = "[red]red flag[/red]" if r.hit else "[yellow]possible red flag (below threshold, no effect)[/yellow]"
        c.print(f"{label} {r.id} ({r.effect.value} {r.value:g}){p} {escape(r.evidence)}")
    if v.rationale:
        c.print(f"[italic]{escape(v.rationale)}[/italic]")
    for sentence in v.set_aside:
        c.print(f"[dim]set aside (off the subject; it cannot raise the score):[/dim] {escape(sentence)}")
    if v.similarity:
        kp = f", key-point coverage {v.similarity.key_point_coverage:.2f}" if v.similarity.key_point_coverage else ""
        c.print(f"similarity to reference: {v.similarity.best_reference:.2f}{kp}")
    for f in v.review_flags:
        c.print(f"[yellow]review[/yellow] {f.code}: {escape(f.reason)}")
    u = v.usage
    c.print(
        f"[dim]{u.calls} judge calls, {u.prompt_tokens} prompt + {u.completion_tokens} generated tokens, "
        f"{u.seconds:.1f} s; judge {v.provenance.judge_backend}:{v.provenance.judge_model} "
        f"({v.provenance.judge_mode}); rubric {v.provenance.rubric_id} v{v.provenance.rubric_version}[/dim]"
    )


def print_question(les: LoadedEvalSet, q: Question, console: Console | None = None) -> None:
    c = console or Console()
    c.print(f"[bold]{q.id}[/bold]  ({les.eval_set.id}, {q.level.value}, {q.topic}, rubric {les.rubric_id_for(q)})")
    c.print(f"\n[bold]Question[/bold]\n{q.question}")
    for i, r in enumerate(q.references, 1):
        c.print(f"\n[bold]Reference {i}[/bold]\n{r}")
    source = "" if q.key_points else " (derived from the reference: list them under key_points to edit)"
    c.print(f"\n[bold]Key points[/bold]{source}", markup=True)
    points = key_points_of(q)
    for i, k in enumerate(points, 1):
        c.print(f"  {i}. {k}", markup=False)
    required = points_required_of(q, len(points))
    if required:
        c.print(f"  The question asks for {required} of these (points_required): the {required} best read count.")
    if q.red_flags:
        c.print("\n[bold]Red flags[/bold]")
        for f in q.red_flags:
            c.print(f"  - [red]{f.id}[/red] ({f.effect.value} {f.value:g}): {f.description}")
            if f.claim:
                c.print(f"      claim: {f.claim}", markup=False)
    for e in q.exemplars:
        c.print(f"\n[bold]Exemplar ({e.band.value}, {e.score_range[0]:g}-{e.score_range[1]:g})[/bold]\n{e.answer}")


class ProgressBar:
    """A rich progress bar, shown from grading's first progress report (after the CSV's warnings and rejected
    rows are printed) until the block ends."""

    def __enter__(self) -> ProgressBar:
        self.bar: RichProgress | None = None
        return self

    def update(self, p: Progress) -> None:
        if self.bar is None:  # the report before the first row: the bar starts empty
            self._start(p)
            return
        secs = max(1e-6, time.perf_counter() - self.t0)
        self.bar.update(
            self.task,
            completed=p.done,
            rate=f"{(p.done - self.start_done) / secs:.2f} rows/s",
            extra=f"{p.prompt_tokens + p.completion_tokens} tok ${p.cost:.4f} review:{p.flagged}",
        )

    def _start(self, p: Progress) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("grading"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[extra]}"),
            transient=False,
            # Each redraw takes a core from llama.cpp's threads, which stall when one is preempted: 2 redraws/s
            # instead of rich's default of 10 still looks live.
            refresh_per_second=2,
        )
        self.bar.start()
        self.task = self.bar.add_task("grade", total=p.total, rate="", extra="")
        self.t0 = time.perf_counter()
        self.start_done = p.done

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
