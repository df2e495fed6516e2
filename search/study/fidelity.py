"""Multi-fidelity across shapes: candidates train in rungs, and the worse shapes stop early.

Asynchronous successive halving (ASHA, Li et al. 2020) driven by tabslim itself, because
Optuna's pruners refuse multi-objective studies (optuna#3450). A candidate that reaches a rung
(`min_epochs x reduction^k` epochs) writes its best validation value there to its trial's user
attributes, reads what the study's other trials wrote at the same rung, and decides alone
whether it goes on. Nobody waits for a rung to fill, and a decision is made once, by the trial
that owns it: with many workers on one storage no trial can be promoted twice.

What ASHA ranks by accuracy alone would stop exactly the small shapes this search looks for,
since a narrower network is behind a wider one after a few epochs. So a rung judges at equal
size and against the floor (`goes_on`):
- **dominated**: a peer no larger is at least as good, where every value past the floor
  counts as the floor itself (holding the floor is all a champion needs). A candidate goes on
  while fewer than max(1, peers // reduction) peers dominate it: the better 1/reduction by
  dominance count;
- **out of reach**: even the most that any fully trained candidate no larger gained after
  this rung would leave it short of the floor (at least `reduction` of them must have
  finished to judge by).

Scratch and distill candidates share rungs (both train from random weights); prune candidates
have their own (their rungs count fine-tuning epochs of a trained network). The baseline is
never stopped. A stopped trial keeps its metrics and is marked (`attributes.rung_stop`); the
champion and the front leave it out (search/front/champion.py, pareto.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from search.study import attributes

__all__ = [
    "Peer",
    "RungJudge",
    "fully_trained",
    "goes_on",
    "rung_epochs",
]


def rung_epochs(min_epochs: int, reduction: int, max_epochs: int) -> tuple[int, ...]:
    """Epoch counts of the rungs below `max_epochs`: min_epochs, x reduction, ... (a candidate
    that passes the last rung trains in full)."""
    rungs: list[int] = []
    epochs = min_epochs
    while epochs < max_epochs:
        rungs.append(epochs)
        epochs *= reduction
    return tuple(rungs)


def schedule_of(approach: str) -> str:
    """Which rungs a candidate shares: training from random weights, or fine-tuning."""
    return "fine_tune" if approach == "prune" else "from_scratch"


def fully_trained(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial trained in full (not stopped at a rung)."""
    return attributes.rung_stop(trial) is None


@dataclass(frozen=True)
class Peer:
    """One candidate's record at a rung: its best value so far and its parameters; `final` is
    its value once fully trained (None while it trains, or when stopped)."""

    value: float
    parameters: float
    final: float | None = None


def _clipped(value: float, floor: float | None, higher_is_better: bool, margin: float) -> float:
    """`value`, capped `margin` past the floor: beyond that, holding the floor is all a
    champion needs. A cap at the floor itself let a smaller peer that merely touched the floor
    stop a larger one that would have certified comfortably."""
    if floor is None:
        return value
    return min(value, floor + margin) if higher_is_better else max(value, floor - margin)


def dominates(
    a: Peer, b: Peer, floor: float | None, higher_is_better: bool, margin: float = 0.0
) -> bool:
    """`a` is no larger than `b` and at least as good against the floor (plus `margin`), and
    better in one."""
    va = _clipped(a.value, floor, higher_is_better, margin)
    vb = _clipped(b.value, floor, higher_is_better, margin)
    no_worse = va >= vb if higher_is_better else va <= vb
    better = va > vb if higher_is_better else va < vb
    return a.parameters <= b.parameters and no_worse and (a.parameters < b.parameters or better)


def goes_on(
    own: Peer,
    peers: Sequence[Peer],
    *,
    floor: float | None,
    higher_is_better: bool,
    reduction: int,
    margin: float = 0.0,
) -> tuple[bool, str]:
    """Whether a candidate at a rung goes on, and if not, why (see the module docstring).

    Args:
        peers: the other candidates' records at the same rung, finished or not.
        margin: how far past the floor a value still counts, in the metric's units: the
            half-width the certification rows are expected to give (`search.study.power`).
    """
    # Only candidates no larger: a wide network converges in few epochs and gains little
    # after a rung, so its gain would judge a slow-learning narrow one out of reach too soon
    # (measured: on a 10k-row regression table it stopped every shape below 2,000 parameters).
    gains = [
        p.final - p.value for p in peers if p.final is not None and p.parameters <= own.parameters
    ]
    if floor is not None and len(gains) >= reduction:
        best_gain = max(gains) if higher_is_better else min(gains)
        reach = own.value + best_gain
        if (reach < floor) if higher_is_better else (reach > floor):
            return False, (
                f"out of reach of the floor: {own.value:.4g} here, and the most any of "
                f"{len(gains)} fully trained candidates no larger moved after this rung "
                f"({best_gain:+.4g}) leaves it short of {floor:.4g}"
            )
    beaten = sum(dominates(p, own, floor, higher_is_better, margin) for p in peers)
    allowed = max(1, (len(peers) + 1) // reduction)
    if beaten >= allowed:
        return False, (
            f"dominated: {beaten} of {len(peers)} candidates at this rung are no larger and "
            f"at least as good against the floor (it goes on below {allowed})"
        )
    return True, ""


class RungJudge:
    """Decides, for one trial, at each rung whether it goes on (`StopAtRungs.decide`); reads
    and writes the rung records through the study's storage, so workers anywhere see them."""

    def __init__(
        self,
        trial: optuna.Trial,
        *,
        approach: str,
        floor: float | None,
        higher_is_better: bool,
        rungs: Sequence[int],
        reduction: int,
        margin: float = 0.0,
    ) -> None:
        self.trial = trial
        self.margin = margin
        self.schedule = schedule_of(approach)
        self.floor, self.higher_is_better = floor, higher_is_better
        self.rungs, self.reduction = tuple(rungs), reduction
        self.records: dict[str, dict[str, Any]] = {}
        self.stop: dict[str, Any] | None = None

    def __call__(self, rung: int, value: float, parameters: int) -> bool:
        epochs = self.rungs[rung]
        own = Peer(value, float(parameters))
        # Written before the peers are read: two trials at a rung together then see each other
        # at least one way round, and neither waits for the other.
        self.records[str(epochs)] = {"value": value, "parameters": parameters}
        self._write()
        go_on, reason = goes_on(
            own,
            self._peers(str(epochs)),
            floor=self.floor,
            higher_is_better=self.higher_is_better,
            reduction=self.reduction,
            margin=self.margin,
        )
        self.records[str(epochs)]["goes_on"] = go_on
        self._write()
        if not go_on:
            self.stop = {"rung": rung, "epochs": epochs, "reason": reason}
        return go_on

    def _write(self) -> None:
        attributes.write_rungs(self.trial, self.records, self.schedule)

    def _peers(self, epochs: str) -> list[Peer]:
        peers = []
        for other in self.trial.study.get_trials(deepcopy=False):
            if other.number == self.trial.number:
                continue
            record = attributes.rung_records(other).get(epochs)
            if record is None or attributes.rung_schedule(other) != self.schedule:
                continue
            final = None
            if other.state == TrialState.COMPLETE and fully_trained(other) and other.values:
                final = float(other.values[0])
                if not math.isfinite(final):
                    final = None
            peers.append(Peer(float(record["value"]), float(record["parameters"]), final))
        return peers
