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

from .models import Criterion, Question, RedFlag, Rubric

_FENCE_LOOKALIKE = re.compile(r"<\s*/?\s*answer\b[^>]*>", re.IGNORECASE)
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
            {"role": "user", "content": self.prefix + "\n" + self.answer_block + "\n" + self.ask},
        ]

    def text(self) -> str:
        return f"[system]\n{self.system}\n[user]\n{self.prefix}\n{self.answer_block}\n{self.ask}"


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

    def _render(self, name: str, **kw) -> str:
        return self.env.get_template(name).render(**kw).strip()

    def build(
        self,
        question: Question,
        rubric: Rubric,
        answer: str,
        intro: str,
        ask: str,
        red_flags: list[RedFlag] | None = None,
        **ask_kw,
    ) -> Messages:
        flags = question.red_flags if red_flags is None else red_flags
        task_intro = self._render(f"{intro}.j2")
        prefix = self._render("context.j2", question=question, rubric=rubric, red_flags=flags, task_intro=task_intro)
        return Messages(
            system=self._render("system.j2"),
            prefix=prefix,
            answer_block=self._render("answer.j2", answer=neutralise(answer)),
            ask=self._render(f"{ask}.j2", question=question, rubric=rubric, **ask_kw),
        )

    def criterion_read(self, q: Question, r: Rubric, answer: str, c: Criterion) -> Messages:
        return self.build(q, r, answer, "intro_probability", "read_criterion", criterion=c)

    def holistic_read(self, q: Question, r: Rubric, answer: str) -> Messages:
        return self.build(q, r, answer, "intro_probability", "read_holistic")

    def view_read(self, q: Question, r: Rubric, answer: str, view: str) -> Messages:
        """Another wording of the overall question, asked after the answer like a criterion (the shared
        prefix and the answer stay cached), read as one digit 0-5."""
        return self.build(q, r, answer, "intro_probability", f"view_{view}")

    def red_flag_read(self, q: Question, r: Rubric, answer: str, flag: RedFlag) -> Messages:
        return self.build(q, r, answer, "intro_probability", "read_red_flag", flag=flag)

    def structured(self, q: Question, r: Rubric, answer: str) -> Messages:
        return self.build(q, r, answer, "intro_structured", "ask_structured")

    def explain(self, q: Question, r: Rubric, answer: str, levels: list[dict]) -> Messages:
        return self.build(q, r, answer, "intro_explain", "ask_explain", levels=levels)

    def repair(self, error: str) -> str:
        return self._render("repair.j2", error=error)
