"""The promotion rule's error rates, by simulation: how often a candidate is promoted, by
judge size and by how much better or worse it truly is.

Model: on each of n judge posts the serving version is right with probability 0.75 and
the candidate with 0.75 + delta; the two disagree on who is right on D + |delta| of the
posts (D = --discordance, 0.15: two classifiers of similar accuracy share most of their
errors), the candidate being the one right on (D + |delta| + delta) / 2 of them. For each
(n, delta) --trials comparisons are drawn and passed to backend.domain.policy.compare and
should_promote, as a successor (trained on a superset of the serving version's labels) and
as a challenger (anything else), and to beats_llm (the LLM switch). Beside them, the rule
this one replaced (exact McNemar "better" at p < 0.05, or "no worse" by a 5-point margin
at 95%), to show why the first version froze.

An error is promoting a worse candidate (delta < 0) or keeping a better one (delta > 0).
Writes benchmarks/results/promotion_rule.json; prints the table.
Example: python -m benchmarks.simulate_promotion
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import stats

from backend.domain import policy
from takemeter.provenance import write_result

RESULTS = Path(__file__).resolve().parent / "results"
JUDGE_SIZES = (5, 10, 20, 30, 50, 100)
DELTAS = (-0.10, -0.05, -0.02, 0.0, 0.02, 0.05, 0.10)


def replaced_rule(n: int, new_only: int, other_only: int) -> bool:
    """The rule before this one: promoted when "better" (one-sided exact McNemar p < 0.05)
    or "no worse" (new-only share minus the one-sided 95% Clopper-Pearson upper bound of
    the other-only share >= -0.05)."""
    discordant = new_only + other_only
    if (
        discordant
        and stats.binomtest(new_only, discordant, 0.5, alternative="greater").pvalue < 0.05
    ):
        return True
    if (
        discordant
        and stats.binomtest(other_only, discordant, 0.5, alternative="greater").pvalue < 0.05
    ):
        return False
    upper = stats.binomtest(other_only, n).proportion_ci(0.90, "exact").high
    return new_only / n - upper >= -0.05


def draw(
    n: int, delta: float, discordance: float, rng: np.random.Generator
) -> tuple[list[str], list[str], list[str]]:
    """Truth and two systems' answers on n posts, by the module's model."""
    d = discordance + abs(delta)
    new_only, other_only = (d + delta) / 2, (d - delta) / 2
    both = 0.75 - other_only
    kind = rng.choice(4, size=n, p=[new_only, other_only, both, 1 - d - both])
    truth = ["a"] * n
    new = ["a" if k in (0, 2) else "b" for k in kind]
    other = ["a" if k in (1, 2) else "b" for k in kind]
    return truth, new, other


def simulate(trials: int, discordance: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for n in JUDGE_SIZES:
        for delta in DELTAS:
            promoted = {"successor": 0, "challenger": 0, "llm_switch": 0, "replaced_rule": 0}
            for _ in range(trials):
                comparison = policy.compare(*draw(n, delta, discordance, rng))
                promoted["successor"] += policy.should_promote(comparison, successor=True)
                promoted["challenger"] += policy.should_promote(comparison, successor=False)
                promoted["llm_switch"] += policy.beats_llm(comparison)
                promoted["replaced_rule"] += replaced_rule(
                    n, comparison.new_only, comparison.other_only
                )
            rows.append(
                {
                    "judge_posts": n,
                    "delta": delta,
                    **{f"p_promote_{k}": round(v / trials, 4) for k, v in promoted.items()},
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=4000)
    parser.add_argument("--discordance", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "promotion_rule.json")
    args = parser.parse_args()
    rows = simulate(args.trials, args.discordance, args.seed)
    print(
        "P(promoted): successor / challenger / LLM switch / replaced rule, by the "
        "candidate's true accuracy difference"
    )
    print("judge posts " + " ".join(f"{d:+.2f}".rjust(22) for d in DELTAS))
    for n in JUDGE_SIZES:
        cells = [r for r in rows if r["judge_posts"] == n]
        print(
            f"{n:>11} "
            + " ".join(
                f"{r['p_promote_successor']:.2f}/{r['p_promote_challenger']:.2f}/"
                f"{r['p_promote_llm_switch']:.2f}/{r['p_promote_replaced_rule']:.2f}".rjust(22)
                for r in cells
            )
        )
    write_result(
        args.out,
        {
            "trials": args.trials,
            "discordance": args.discordance,
            "evidence_p": policy.EVIDENCE_P,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
