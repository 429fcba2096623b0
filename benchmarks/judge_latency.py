"""Embedded judge latency per mode: cold and warm seconds per judgment, prompt and generated tokens per
second, peak RSS. Cold = first answer to a question (shared prefix not yet cached); warm = later answers.

    python benchmarks/judge_latency.py [--answers 3]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluator.config import resolve_judge_settings  # noqa: E402
from evaluator.judges import make_judge  # noqa: E402
from evaluator.prompts import PromptSet  # noqa: E402
from evaluator.resources import Resources  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--answers", type=int, default=3, help="warm answers per mode")
    a = p.parse_args()
    res = Resources.locate()
    prompts = PromptSet(res.prompts_dir)
    les = res.load_eval_set("ml-screening")
    rubric = res.rubric("ml-screening").rubric
    qs = les.eval_set.questions
    t0 = time.perf_counter()
    judge = make_judge(resolve_judge_settings("local", mode="probability"))
    judge.backend.llm  # noqa: B018 - load now so load time is reported on its own
    load = time.perf_counter() - t0
    print(f"model load {load:.1f} s (assembly from parts excluded once cached)")
    rows = []
    for mode_i, mode in enumerate(("probability", "structured", "explanation")):
        q = qs[mode_i]  # a fresh question per mode, so the first judgment is cold
        answers = [e.answer for e in q.exemplars][: 1 + a.answers]
        judge.mode = "structured" if mode == "structured" else "probability"
        times, ptoks, ctoks, secs = [], 0, 0, 0.0
        for ans in answers:
            t = time.perf_counter()
            if mode == "explanation":
                ev, rationale, u, err = judge.explain(q, rubric, ans, {c.id: 2 for c in rubric.criteria}, prompts)
            else:
                u = judge.judge(q, rubric, ans, prompts).usage
            times.append(time.perf_counter() - t)
            ptoks += u.prompt_tokens
            ctoks += u.completion_tokens
            secs += u.seconds
        warm = times[1:] or times
        rows.append((mode, times[0], sum(warm) / len(warm), ptoks / max(secs, 1e-9), ctoks / max(secs, 1e-9)))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'mode':12s} {'cold s':>8s} {'warm s':>8s} {'tokens/s (prompt+gen combined)':>32s}")
    for mode, cold, warm, pt, ct in rows:
        print(f"{mode:12s} {cold:8.2f} {warm:8.2f}   prompt {pt:7.1f} tok/s, generated {ct:6.1f} tok/s (of total time)")
    print(f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
