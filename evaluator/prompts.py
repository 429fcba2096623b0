"""Renders the judge prompts from prompts/*.j2 (jinja2, StrictUndefined).

Layout of every user message: the shared part (question, references, key points, criteria, red flags,
task intro) first, then the fenced answer, then a short ask. Everything before the answer is identical
across answers to one question, so server prompt caches and the local KV cache reuse it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from .errors import PromptTemplateError
from .models import Criterion, Question, RedFlag, Rubric, View

_FENCE_LOOKALIKE = re.compile(r"<\s*/?\s*answer\b[^>]*>", re.IGNORECASE)
POINT_TEMPLATES = ("system_reference", "context_points", "answer_reference", "read_keyidea", "read_point", "read_claim")
_SPECIAL_TOKEN = re.compile(r"<\|[^|<>]{0,40}\|>")


def neutralise(answer: str) -> str:
    """Defuses text that imitates our fence or a chat-template control token inside an answer."""
    text = _FENCE_LOOKALIKE.sub(lambda m: m.group(0).replace("<", "‹").replace(">", "›"), answer)
    text = _SPECIAL_TOKEN.sub(lambda m: m.group(0).replace("<|", "‹|").replace("|>", "|›"), text)
    return text


@dataclass(frozen=True)
class Messages:
    system: str
    prefix: str  # shared part, ends right before the fenced answer
    answer_block: str
    ask: str

    def as_chat(self) -> list[dict]:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.prefix + "\n" + self.answer_block + ("\n" + self.ask if self.ask else "")},
        ]

    def text(self) -> str:
        return f"[system]\n{self.system}\n[user]\n{self.prefix}\n{self.answer_block}" + (
            f"\n{self.ask}" if self.ask else ""
        )


class PromptSet:
    def __init__(self, folder: Path):
        self.folder = folder
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(folder)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            autoescape=False,
        )
        h = hashlib.sha256()
        for p in sorted(folder.glob("*.j2")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
        self.hash = h.hexdigest()[:16]
        # The templates key-point reads use: the grade model fitted on those readings stays valid while they stay.
        h = hashlib.sha256()
        for name in POINT_TEMPLATES:
            p = folder / f"{name}.j2"
            h.update(p.read_bytes() if p.exists() else b"")
        self.points_hash = h.hexdigest()[:16]

    def _render(self, name: str, **kw) -> str:
        try:
            template = self.env.get_template(name)
        except jinja2.TemplateNotFound as e:
            raise PromptTemplateError(
                f"prompt template {self.folder / name} does not exist; check the rubric's context_template / views "
                f"(templates here: {', '.join(sorted(p.stem for p in self.folder.glob('*.j2')))})"
            ) from e
        return template.render(**kw).strip()

    def build(
        self,
        question: Question,
        rubric: Rubric,
        answer: str,
        intro: str,
        ask: str,
        red_flags: list[RedFlag] | None = None,
        compact: bool = False,
        **ask_kw,
    ) -> Messages:
        """`compact`: the rubric's own system/context/answer templates (probability-mode reads); otherwise the
        full rubric context that structured and explanation calls need."""
        flags = question.red_flags if red_flags is None else red_flags
        names = (
            (rubric.system_template, rubric.context_template, rubric.answer_template)
            if compact
            else ("system", "context", "answer")
        )
        task_intro = self._render(f"{intro}.j2")
        prefix = self._render(
            f"{names[1]}.j2", question=question, rubric=rubric, red_flags=flags, task_intro=task_intro, **ask_kw
        )
        return Messages(
            system=self._render(f"{names[0]}.j2"),
            prefix=prefix,
            answer_block=self._render(f"{names[2]}.j2", answer=neutralise(answer)),
            ask=self._render(f"{ask}.j2", question=question, rubric=rubric, **ask_kw),
        )

    # Probability-mode reads use the rubric's templates. With the full context every read of an answer shares
    # one cached prefix and differs only in the short ask after the answer.

    def criterion_read(self, q: Question, r: Rubric, answer: str, c: Criterion) -> Messages:
        return self.build(q, r, answer, "intro_probability", "read_criterion", compact=True, criterion=c)

    def holistic_read(self, q: Question, r: Rubric, answer: str) -> Messages:
        return self.build(q, r, answer, "intro_probability", "read_holistic", compact=True)

    def view_read(self, q: Question, r: Rubric, answer: str, view: View) -> Messages:
        """One wording of the overall question, read as one digit 0-5. The view is passed to the context too: the
        compact reference-only context states the view's scale before the question (measured to agree better with
        human grades than stating it after the answer)."""
        return self.build(q, r, answer, "intro_probability", "read_view", compact=True, view=view)

    def red_flag_read(self, q: Question, r: Rubric, answer: str, flag: RedFlag) -> Messages:
        return self.build(q, r, answer, "intro_probability", "read_red_flag", compact=True, flag=flag)

    def point_read(self, q: Question, points: list[str], answer: str, ask: str, **ask_kw) -> Messages:
        """A key-point read: one shared prefix per question (key-idea scale, question, references, key points),
        the fenced answer, then one short ask (`read_keyidea`, `read_point` or `read_claim`). Every read of an
        answer differs only in the ask, so the answer is evaluated once and each further read costs its ask."""
        return Messages(
            system=self._render("system_reference.j2"),
            prefix=self._render("context_points.j2", question=q, points=points),
            answer_block=self._render("answer_reference.j2", answer=neutralise(answer)),
            ask=self._render(f"{ask}.j2", **ask_kw),
        )

    def structured(self, q: Question, r: Rubric, answer: str) -> Messages:
        return self.build(q, r, answer, "intro_structured", "ask_structured")

    def structured_points(
        self, q: Question, r: Rubric, answer: str, points: list[str], claims: list[tuple[str, str]]
    ) -> Messages:
        """The one structured call of a key-point rubric: the numbered key points, the red flags' claims, the
        key-idea scale and the criteria, then the fenced answer; the reply covers them all (structured_points.py)."""
        return Messages(
            system=self._render("system.j2"),
            prefix=self._render("context_points_structured.j2", question=q, rubric=r, points=points, claims=claims),
            answer_block=self._render("answer.j2", answer=neutralise(answer)),
            ask=self._render("ask_structured.j2"),
        )

    def explain(self, q: Question, r: Rubric, answer: str, levels: list[dict]) -> Messages:
        return self.build(q, r, answer, "intro_explain", "ask_explain", levels=levels)

    def repair(self, error: str) -> str:
        return self._render("repair.j2", error=error)
