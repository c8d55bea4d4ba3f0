"""The rollout rule's error rates, simulated: how often it rolls back an equal candidate, promotes
a worse one, and how much feedback it needs to act (docs/service.md "Rollouts").

    python -m loadtests.experiments.rollout_rule --runs 2000 --out docs/rollout-rule.json

Each run feeds ``--max-feedback`` images of canary feedback, half answered by each version, and
applies ``service.rollout.rule.judge`` every ``--look-every`` candidate images, as a server does
after each feedback (less often, to keep the simulation quick: more looks can only act sooner,
on both kinds of error). An image's answer carries one label drawn uniformly from ``--classes``
classes; it is right with the version's precision of that class. The current version's precision
is ``--precision`` in every class. The candidate's scenarios:

* ``equal``: the same precision (the rule should promote, never roll back);
* ``at-margin``: one class exactly ``margin`` worse (the boundary: promoting it is the error the
  confidence bounds; rolling it back is not an error of the rule's, but neither is wanted);
* ``beyond-margin``: one class ``2 x margin`` worse (promoting it is an error);
* ``shuffled``: precision ``1 / classes`` everywhere (rolled back, and how soon).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from service.rollout.rule import Counts, judge


def simulate(
    candidate: np.ndarray,
    current: np.ndarray,
    rng: np.random.Generator,
    *,
    look_every: int,
    max_feedback: int,
    rule: dict,
) -> tuple[str, int]:
    """(the first action other than wait, or "wait", and the candidate's feedback images then)."""
    k = len(current)
    labels = [str(c) for c in range(k)]
    counts = {"current": Counts.zeros(k), "candidate": Counts.zeros(k)}
    for seen in range(look_every, max_feedback + 1, look_every):
        for role, precision in (("current", current), ("candidate", candidate)):
            c = counts[role]
            cls = rng.integers(0, k, look_every)
            right = rng.random(look_every) < precision[cls]
            np.add.at(c.tp, cls[right], 1)
            np.add.at(c.fp, cls[~right], 1)
            c.images += look_every
        action = judge(counts["current"], counts["candidate"], labels, **rule).action
        if action != "wait":
            return action, seen
    return "wait", max_feedback


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000, help="simulated rollouts per scenario")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--precision", type=float, default=0.95, help="the current version's")
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--margin", type=float, default=0.05)
    ap.add_argument("--min-feedback", type=int, default=200)
    ap.add_argument("--look-every", type=int, default=20, help="candidate images between looks")
    ap.add_argument("--max-feedback", type=int, default=20_000, help="candidate images per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the table as JSON here")
    args = ap.parse_args()
    k, p, m = args.classes, args.precision, args.margin
    current = np.full(k, p)
    scenarios = {
        "equal": current.copy(),
        "at-margin": np.where(np.arange(k) == 0, p - m, p),
        "beyond-margin": np.where(np.arange(k) == 0, p - 2 * m, p),
        "shuffled": np.full(k, 1 / k),
    }
    rule = {"confidence": args.confidence, "margin": m, "min_feedback": args.min_feedback}
    rng = np.random.default_rng(args.seed)
    table = {}
    for name, candidate in scenarios.items():
        outcomes = [
            simulate(
                candidate,
                current,
                rng,
                look_every=args.look_every,
                max_feedback=args.max_feedback,
                rule=rule,
            )
            for _ in range(args.runs)
        ]
        row = {}
        for action in ("promote", "roll_back", "wait"):
            seen = [n for a, n in outcomes if a == action]
            row[action] = {
                "rate": len(seen) / args.runs,
                "median_feedback": float(np.median(seen)) if seen else None,
            }
        table[name] = row
        print(name, json.dumps(row))
    result = {
        "parameters": {**vars(args), "out": str(args.out) if args.out else None},
        "scenarios": table,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
