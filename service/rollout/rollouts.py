"""Rollouts: which version answers a request that names none, and whether the candidate stays.

One ``Rollout`` per model with a ``shadow`` or ``canary`` policy in its rollout.yaml. It routes
requests (``route``), counts the feedback on each version's answers (``feedback``), pools that
evidence with every other process through the ``Ledger`` (``sync``), and applies the decision
rule (``rule.judge``): promote, roll back, or wait. Everything here runs on the event loop except
the ledger's I/O, which ``sync`` runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from service.metrics import Metrics
from service.monitoring import stats
from service.monitoring.receipts import Receipt
from service.rollout.ledger import Ledger
from service.rollout.rule import Counts, Verdict, judge
from service.rollout.spec import RolloutSpec, SpecError
from service.versions import LoadedVersion

log = logging.getLogger(__name__)

ROLES = ("current", "candidate")
STATES = ("evaluating", "promoted", "rolled_back")
ACTIONS = ("promote", "roll_back", "wait")
_DECIDED = {"promote": "promoted", "roll_back": "rolled_back"}
# what reading another process's evidence file may raise (another release's, a damaged one)
BAD_EVIDENCE = (KeyError, TypeError, ValueError, OverflowError)


@dataclass
class Evidence:
    """Feedback counts of both roles, shadow agreement and requests answered per role."""

    counts: dict[str, Counts]
    compared: int = 0
    agree_top1: int = 0
    agree_labels: int = 0

    @classmethod
    def zeros(cls, classes: int) -> Evidence:
        return cls({role: Counts.zeros(classes) for role in ROLES})

    def __add__(self, other: Evidence) -> Evidence:
        return Evidence(
            {role: self.counts[role] + other.counts[role] for role in ROLES},
            self.compared + other.compared,
            self.agree_top1 + other.agree_top1,
            self.agree_labels + other.agree_labels,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": {role: c.to_json() for role, c in self.counts.items()},
            "compared": self.compared,
            "agree_top1": self.agree_top1,
            "agree_labels": self.agree_labels,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], classes: int) -> Evidence:
        return cls(
            {role: Counts.from_json(data["counts"][role], classes) for role in ROLES},
            int(data["compared"]),
            int(data["agree_top1"]),
            int(data["agree_labels"]),
        )


class Rollout:
    """One model's rollout of ``candidate`` against ``current``."""

    def __init__(
        self, name: str, spec: RolloutSpec, pair: tuple[int, int], metrics: Metrics, keep: int
    ) -> None:
        self.name, self.spec = name, spec
        self.current, self.candidate = pair
        self.state = "evaluating"
        self.labels: list[str] | None = None  # set once both versions loaded with equal labels
        self.mismatch = ""  # why the two versions cannot be compared
        self.absent: list[int] = []  # versions of the pair the repository does not hold
        self.own: Evidence | None = None
        self.others: Evidence | None = None
        self.verdict: Verdict | None = None
        self.decision: dict[str, Any] | None = None
        self.dirty = False  # own evidence changed since it was last published
        self._m = metrics
        self._served = 0  # canary: requests routed so far by this process
        self._keep = keep
        self._shadow: OrderedDict[str, tuple[tuple[int, ...], ...]] = OrderedDict()
        self._answered = {role: metrics.rollout_answered.labels(name, role) for role in ROLES}
        for version, role in ((self.current, "current"), (self.candidate, "candidate")):
            metrics.rollout_role.labels(name, str(version), role).set(1)
        self._show_state()

    @property
    def pair(self) -> tuple[int, int]:
        return self.current, self.candidate

    def retire(self) -> None:
        for version, role in ((self.current, "current"), (self.candidate, "candidate")):
            self._m.rollout_role.labels(self.name, str(version), role).set(0)

    # --- routing --------------------------------------------------------------------------
    def bind(self, serving: dict[int, LoadedVersion]) -> None:
        """Take the labels once both versions are loaded (they must be the same list)."""
        if self.labels is not None or self.mismatch:
            return
        cur, cand = serving.get(self.current), serving.get(self.candidate)
        if cur is None or cand is None:
            return
        if list(cur.meta.labels) != list(cand.meta.labels):
            self.mismatch = (
                f"v{self.candidate}'s labels differ from v{self.current}'s: a rollout compares "
                "two versions of the same classes"
            )
            log.error(
                "model %s rollout: %s; v%d keeps answering", self.name, self.mismatch, self.current
            )
            return
        self.labels = list(cur.meta.labels)
        self.own = Evidence.zeros(len(self.labels))
        self.others = self.others or Evidence.zeros(len(self.labels))

    def route(
        self, serving: dict[int, LoadedVersion], count: bool = True
    ) -> tuple[LoadedVersion | None, LoadedVersion | None]:
        """(the version that answers, the one that shadows it or None). ``count=False`` routes
        a request that was counted already (its version went away while it was decoded): it
        counts nothing and takes no canary turn, so it goes to the current version."""
        self.bind(serving)
        lv, role, shadow = self._choose(serving, canary_turn=count)
        if lv is not None and count:
            self._answered[role].inc()
        return lv, shadow

    def _choose(
        self, serving: dict[int, LoadedVersion], canary_turn: bool
    ) -> tuple[LoadedVersion | None, str, LoadedVersion | None]:
        """(the version that answers, its role, the one that shadows it or None)."""
        cur, cand = serving.get(self.current), serving.get(self.candidate)
        if self.state == "promoted" and cand is not None:
            return cand, "candidate", None
        if cur is None:
            return None, "current", None
        if self.state != "evaluating" or self.labels is None or not canary_turn:
            return cur, "current", None
        if self.spec.policy == "shadow":
            return cur, "current", cand
        # canary: the candidate takes request n when floor(n * share) steps up, so over any
        # run of requests it answers floor(n * share) or one more, never more than its share.
        n, share = self._served, self.spec.share
        self._served += 1
        if cand is not None and math.floor((n + 1) * share) > math.floor(n * share):
            return cand, "candidate", None
        return cur, "current", None

    def shadowed(
        self, request_id: str, answered: np.ndarray, shadow: np.ndarray, top: np.ndarray
    ) -> None:
        """The candidate's answer to a request the current version answered (bool ``[N, C]``
        thresholded labels of each, and each one's top-1 as ``top[2, N]``)."""
        if self.own is None or self.state != "evaluating":
            return
        own = self.own
        own.compared += len(answered)
        own.agree_top1 += int((top[0] == top[1]).sum())
        own.agree_labels += int((answered == shadow).all(axis=1).sum())
        self._shadow[request_id] = tuple(tuple(np.flatnonzero(row).tolist()) for row in shadow)
        while len(self._shadow) > self._keep:
            self._shadow.popitem(last=False)
        self.dirty = True

    # --- evidence -------------------------------------------------------------------------
    def feedback(self, receipt: Receipt, request_id: str, truths: dict[int, int]) -> bool:
        """Count ground truth on an answer of either version; True when the verdict changed."""
        if self.own is None or self.state != "evaluating":
            return False
        counts = self.own.counts
        if receipt.version == self.candidate:
            for j, truth in truths.items():
                counts["candidate"].add(receipt.predicted[j], truth)
        elif receipt.version == self.current:
            shadow = self._shadow.get(request_id)
            for j, truth in truths.items():
                counts["current"].add(receipt.predicted[j], truth)
                if shadow is not None:
                    counts["candidate"].add(shadow[j], truth)
        else:
            return False
        self.dirty = True
        return self.judge()

    def total(self) -> Evidence | None:
        if self.own is None or self.others is None:
            return None
        return self.own + self.others

    def judge(self) -> bool:
        """Apply the rule to the fleet's evidence; True when the action changed."""
        total = self.total()
        if total is None or self.labels is None:
            return False
        before = self.verdict.action if self.verdict else None
        self.verdict = judge(
            total.counts["current"],
            total.counts["candidate"],
            self.labels,
            confidence=self.spec.confidence,
            margin=self.spec.margin,
            min_feedback=self.spec.min_feedback,
        )
        self._show(total)
        return self.verdict.action != before

    def due(self) -> dict[str, Any] | None:
        """The decision to write when the rule says act and ``auto`` lets it, else None."""
        v = self.verdict
        if self.state != "evaluating" or not self.spec.auto or v is None or v.action == "wait":
            return None
        return {
            "action": v.action,
            "reason": v.reason,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def adopt(self, decision: dict[str, Any], process: str) -> None:
        """Follow ``decision`` (this process's or the first one any process wrote)."""
        state = _DECIDED.get(decision.get("action", ""))
        if state is None or self.state == state:
            return
        self.decision = {**decision, "by": decision.get("by", process)}
        self.state = state
        log.warning(
            "model %s rollout: %s v%d against v%d: %s",
            self.name,
            "promoted" if state == "promoted" else "rolled back",
            self.candidate,
            self.current,
            decision.get("reason", ""),
        )
        self._show_state()

    # --- what it shows --------------------------------------------------------------------
    def _show_state(self) -> None:
        for state in STATES:
            self._m.rollout_state.labels(self.name, state).set(int(state == self.state))

    def _show(self, total: Evidence) -> None:
        m, v = self._m, self.verdict
        assert v is not None
        for action in ACTIONS:
            m.rollout_verdict.labels(self.name, action).set(int(action == v.action))
        for c in [*v.classes, v.overall]:
            if c is None:
                continue
            for role, value, support in (
                ("current", c.current, c.current_support),
                ("candidate", c.candidate, c.candidate_support),
            ):
                m.rollout_precision.labels(self.name, role, c.label).set(
                    math.nan if value is None else value
                )
                m.rollout_support.labels(self.name, role, c.label).set(support)
            for bound, value in (("lower", c.lower), ("upper", c.upper)):
                m.rollout_difference.labels(self.name, c.label, bound).set(
                    math.nan if value is None else value
                )
        if total.compared:
            m.rollout_agreement.labels(self.name, "top1").set(total.agree_top1 / total.compared)
            m.rollout_agreement.labels(self.name, "labels").set(total.agree_labels / total.compared)

    def view(self, shared: bool) -> dict[str, Any]:
        spec = self.spec
        out: dict[str, Any] = {
            "policy": spec.policy,
            "current": self.current,
            "candidate": self.candidate,
            "state": self.state,
            "share": spec.share if spec.policy == "canary" else None,
            "auto": spec.auto,
            "rule": {
                "confidence": spec.confidence,
                "margin": spec.margin,
                "min_feedback": spec.min_feedback,
            },
            "decision": self.decision,
            "verdict": None,
            "evidence": None,
            "shared": shared,
            "problem": self.mismatch or None,
        }
        if self.absent:
            named = " and ".join(f"v{v}" for v in self.absent)
            out["problem"] = f"{named} not in the repository: the rollout waits for it"
        total = self.total()
        if total is None or self.labels is None:
            return out
        if self.verdict is None:
            self.judge()
        assert self.verdict is not None
        out["verdict"] = {"action": self.verdict.action, "reason": self.verdict.reason}
        out["evidence"] = _evidence(total, self.labels, self.verdict, spec.confidence)
        return out


def _estimate(successes: np.ndarray, trials: np.ndarray, confidence: float) -> list[dict]:
    point = stats.ratio(successes, trials)
    lower = stats.clopper_pearson_lower(successes, trials, confidence)
    upper = stats.clopper_pearson_upper(successes, trials, confidence)
    return [
        {
            "value": float(point[c]) if trials[c] else None,
            "lower_bound": float(lower[c]) if trials[c] else None,
            "upper_bound": float(upper[c]) if trials[c] else None,
            "support": int(trials[c]),
        }
        for c in range(len(trials))
    ]


def _evidence(
    total: Evidence, labels: list[str], verdict: Verdict, confidence: float
) -> dict[str, Any]:
    """Per class and role: precision and recall with Clopper-Pearson bounds; the rule's bounds."""
    roles = {}
    for role, c in total.counts.items():
        roles[role] = {
            "feedback": c.images,
            "precision": _estimate(c.tp, c.tp + c.fp, confidence),
            "recall": _estimate(c.tp, c.tp + c.fn, confidence),
        }
    per_class = [
        {
            "label": label,
            **{role: {k: roles[role][k][i] for k in ("precision", "recall")} for role in ROLES},
            "difference": {"lower": cmp.lower, "upper": cmp.upper},
        }
        for i, (label, cmp) in enumerate(zip(labels, verdict.classes, strict=True))
    ]
    overall = verdict.overall
    assert overall is not None
    agreement = None
    if total.compared:
        agreement = {
            "compared": total.compared,
            "top1": total.agree_top1 / total.compared,
            "labels": total.agree_labels / total.compared,
        }
    return {
        "feedback": {role: roles[role]["feedback"] for role in ROLES},
        "overall": overall.to_json(),
        "per_class": per_class,
        "agreement": agreement,
    }


class Rollouts:
    """Every model's rollout in this process; ``update`` after each repository scan."""

    def __init__(self, metrics: Metrics, ledger: Ledger | None, keep: int) -> None:
        self._m = metrics
        self.ledger = ledger
        self._keep = keep
        self.active: dict[str, Rollout] = {}
        self.problems: dict[str, str] = {}  # model → why its rollout.yaml was not taken
        self._shared = ledger is not None  # false once the ledger refused a write
        self._warned: set[str] = set()
        self.on_decision: Callable[[], None] = lambda: None
        self._writes: set[asyncio.Task] = set()

    # --- specs (from the repository's scan) -------------------------------------------------
    def update(
        self, specs: dict[str, RolloutSpec | SpecError | None], found: dict[str, list[int]]
    ) -> None:
        for name in set(self.active) | set(specs):
            spec = specs.get(name)
            if isinstance(spec, SpecError):
                if self.problems.get(name) != str(spec):
                    log.error("%s; the rollout stays as it was", spec)
                self.problems[name] = str(spec)
                continue  # an invalid file changes nothing
            self.problems.pop(name, None)
            pair = spec.pair(found.get(name, [])) if spec is not None else None
            old = self.active.get(name)
            if pair is None:
                if old is not None:
                    old.retire()
                    del self.active[name]
                continue
            if old is not None and old.pair == pair:
                old.spec = spec  # same versions: the evidence and the state carry on
            else:
                if old is not None:
                    old.retire()
                assert spec is not None
                self.active[name] = Rollout(name, spec, pair, self._m, self._keep)
                log.info("model %s rollout: %s of v%d against v%d", name, spec.policy, *pair[::-1])
            absent = [v for v in pair if v not in found.get(name, [])]
            self.active[name].absent = absent
            if absent:
                log.error(
                    "model %s rollout.yaml names %s, not in the repository: nothing to compare",
                    name,
                    " and ".join(f"v{v}" for v in absent),
                )

    def pinned(self, name: str) -> set[int]:
        """Versions the repository must load for ``name``'s rollout, whatever its policy."""
        r = self.active.get(name)
        if r is None:
            return set()
        return {
            "evaluating": {r.current, r.candidate},
            "promoted": {r.candidate},
            "rolled_back": {r.current},
        }[r.state]

    # --- request path ------------------------------------------------------------------------
    def route(
        self,
        name: str,
        serving: dict[int, LoadedVersion],
        latest: LoadedVersion | None,
        count: bool = True,
    ) -> tuple[LoadedVersion | None, LoadedVersion | None]:
        r = self.active.get(name)
        if r is None:
            return latest, None
        lv, shadow = r.route(serving, count)
        if (
            lv is None
            and latest is not None
            and not (r.state == "rolled_back" and latest.version == r.candidate)
        ):
            return latest, None  # the current version is not loaded: the newest answers
        return lv, shadow

    def shadowed(
        self, name: str, request_id: str, answered: np.ndarray, shadow: np.ndarray, top: np.ndarray
    ) -> None:
        r = self.active.get(name)
        if r is not None:
            r.shadowed(request_id, answered, shadow, top)

    def count_shadow(self, name: str, outcome: str, requests: int = 1) -> None:
        self._m.rollout_shadow.labels(name, outcome).inc(requests)

    def feedback(self, receipt: Receipt, request_id: str, truths: dict[int, int]) -> None:
        r = self.active.get(receipt.model)
        if r is None or not r.feedback(receipt, request_id, truths):
            return
        if (decision := r.due()) is not None:
            self._decide(r, decision)

    def _decide(self, r: Rollout, decision: dict[str, Any]) -> None:
        """Act now in this process; ``sync`` writes it for every other one."""
        r.adopt(decision, self.ledger.process if self.ledger else "this process")
        r.dirty = True
        self.on_decision()
        if self.ledger is not None:  # written for the fleet now, not at the next sync
            task = asyncio.get_running_loop().create_task(self.sync())
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    # --- the fleet ---------------------------------------------------------------------------
    async def sync(self) -> None:
        """Publish this process's evidence and decisions, read everyone's, judge again."""
        if self.ledger is None:
            return
        loop = asyncio.get_running_loop()
        for name, r in list(self.active.items()):
            if r.state != "evaluating" and not r.dirty:
                continue  # decided, and the decision is written: nothing changes any more
            own = r.own.to_json() if r.dirty and r.own is not None else None
            mine = (
                r.decision if r.decision and r.decision.get("by") == self.ledger.process else None
            )
            r.dirty = False
            try:
                gathered, first = await loop.run_in_executor(
                    None, self._exchange, name, r.pair, own, mine
                )
            except Exception as exc:  # noqa: BLE001 - the fleet view waits; this process goes on
                r.dirty = True
                self._warn(
                    name,
                    f"rollout state {self.ledger.location} failed ({exc}): decisions are this "
                    "process's own until it answers",
                )
                continue
            self._shared = True
            if self.active.get(name) is not r:
                continue  # replaced while we read
            if first is not None:
                r.adopt(first, self.ledger.process)
            if r.labels is None:
                continue
            others = Evidence.zeros(len(r.labels))
            for item in gathered:
                try:
                    others = others + Evidence.from_json(item, len(r.labels))
                except BAD_EVIDENCE:
                    continue  # another release's or a damaged file: not evidence
            r.others = others
            r.judge()
            if (decision := r.due()) is not None:
                self._decide(r, decision)

    def _exchange(
        self,
        name: str,
        pair: tuple[int, int],
        own: dict[str, Any] | None,
        mine: dict[str, Any] | None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        assert self.ledger is not None
        if own is not None:
            self.ledger.publish(name, pair, own)
        gathered, first = self.ledger.gather(name, pair)
        if first is None and mine is not None:
            self.ledger.decide(name, pair, mine)
            gathered, first = self.ledger.gather(name, pair)
        return gathered, first

    def _warn(self, name: str, text: str) -> None:
        self._shared = False
        if name not in self._warned:
            self._warned.add(name)
            log.warning("model %s: %s", name, text)

    async def poll(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
            except Exception:
                log.exception("rollout sync failed")

    # --- views -------------------------------------------------------------------------------
    def view(self, name: str) -> dict[str, Any] | None:
        r = self.active.get(name)
        problem = self.problems.get(name)
        if r is None:
            if problem is None:
                return None
            return {"policy": "newest", "state": None, "problem": problem}
        out = r.view(self._shared)
        if problem:
            out["problem"] = problem
        return out

    def views(self, names: list[str]) -> dict[str, dict[str, Any]]:
        return {n: v for n in names if (v := self.view(n)) is not None}
