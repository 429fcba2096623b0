"""Gaming in structured mode (an OpenAI-compatible endpoint), replayed from the recorded cassette.

    python benchmarks/gaming_structured.py

tests/test_recorded_gaming.py records, once, what `python -m llama_cpp.server` serving the bundled 1.5B model
replied in structured mode (one JSON reply per answer: a quote and yes/no per key point, each red flag's claim, the
key idea) to the worst measured attempt of each held-out style placed on a weak bank answer, to the weak answer
alone, and to the cleaned copy of each flagged answer (tests/cassettes/gaming_held_out.yaml). This replays those
exchanges offline through the same scorer and prints, per style, the rise over the weak answer alone, whether the
answer was flagged, and whether it scored above its cleaned copy; the last line has gaming.py's form. Seconds, no
model: the replies are the recorded ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the cassette's replay set-up (conftest_vcr) and its cases

RAISE = 5.0


def _recorded_test():
    spec = importlib.util.spec_from_file_location("recorded_gaming", ROOT / "tests" / "test_recorded_gaming.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    t = _recorded_test()
    cassette = t.CASSETTES / f"{t.CASSETTE}.yaml"
    if not cassette.exists():
        print(
            f"{cassette.relative_to(ROOT)} not recorded yet: bash benchmarks/record_cassettes.sh -k test_recorded_gaming"
        )
        return 1
    verdicts = t.score_cases()
    corpus = {a["id"]: a for a in t.gaming().load_corpus()["attempts"]}
    print(f"{'style':25} {'question':26} {'weak':>5} {'attacked':>8} {'rise':>6} {'flagged':>7} {'cleaned':>7}")
    rows = []
    for style, aid, qid, weak, text in t.CASES:
        wv, av = verdicts[(qid, weak.strip())], verdicts[(qid, text.strip())]
        flagged = "injection_suspected" in t.codes(av)
        clean = t.cleaned_copy(text)
        cv = verdicts.get((qid, clean.strip())) if clean is not None else None
        rise = (av.score_100 or 0.0) - (wv.score_100 or 0.0)
        above = cv is not None and flagged and (av.score_100 or 0.0) > (cv.score_100 or 0.0) + t.CLEANED_TOLERANCE
        rows.append((rise, flagged, corpus[aid]["addresses_grader"], above))
        cleaned = "-" if cv is None else f"{cv.score_100:.1f}"
        print(
            f"{style:25} {qid:26} {wv.score_100:5.1f} {av.score_100:8.1f} {rise:+6.1f} {'yes' if flagged else 'no':>7}"
            f" {cleaned:>7}"
        )
    asking = [r for r in rows if r[2]]
    flag_rate = f"{100 * sum(r[1] for r in asking) / len(asking):.0f}%" if asking else "n/a"
    print(
        f"gaming (structured, recorded): max rise {max(r[0] for r in rows):.1f}, raised>=5 "
        f"{sum(r[0] >= RAISE for r in rows)}/{len(rows)}, flagged {flag_rate}, above cleaned copy "
        f"{sum(r[3] for r in rows)} [held-out styles, worst attempt each]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
