"""Call planning: which of an epoch's steps run as one call of K steps, and `auto`'s trial.

`train_loop` runs an epoch as a list of `Calls`: runs of calls of `steps_per_call` steps.
With a fixed K the epoch is as many calls of K as fit, then the rest one step per call
(`one_step_fn`), so K need not divide the epoch. The plan is laid out from the start of the
epoch (`epoch_calls`), and a run resumed at position `p` takes it up from `p`
(`calls_from`): checkpoints fall between calls, so a resumed run makes the same calls as
an uninterrupted one. A position that falls inside a call of the plan (a checkpoint written
with another K) is reached with single steps.

`steps_per_call="auto"` (SPEC-2 section 7) times K = 1 and larger K on the run's first
steps, which are ordinary training steps: `AutoTrial` yields the trial's runs, each one
call to compile and then at least `TRIAL_STEPS` steps that the loop times (blocking on
the first call's result before starting the clock and on the last one's before stopping
it), then decides (`choose`). K = 8 is tried after K = 1; K = 32 only when K = 8 won and
the epoch still holds its trial, since a model that loses inside `lax.scan` (convolution
gradients on a CPU) loses more with a longer scan, and a trial costs real time; and no
larger K is tried at all when a K = 1 step takes `LONG_STEP_SECONDS` or more (a step that
long is bound by its computation, which fusing does not shorten). The larger
K is kept only when it beats K = 1 by at least `MIN_GAIN`. The choice (`AutoChoice`) goes
into every checkpoint, so a resumed run keeps it and runs no trial.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

StepsPerCall = int | Literal["auto"]

TRIAL_STEPS = 64
"""Steady steps each K of the trial is timed over (after its compiling call): at least 50."""
AUTO_CANDIDATES = (8, 32)
"""The larger K the trial tries, in order; each one only after the one before it won."""
MIN_GAIN = 1.05
"""A larger K is kept only when its steps/s is at least this times K = 1's."""

LONG_STEP_SECONDS = 0.005
"""A K = 1 step at least this long is bound by its own computation: no larger K is tried.
Fusing steps saves per-call work (dispatch, buffer set-up: tens of microseconds on a CPU,
some hundreds at most), under 5 % of such a step, while trying a K costs its compilation
and its timed steps, which for a model that loses inside `lax.scan` (convolution
gradients on a CPU run ~8x slower there) cost more than a short run can win back."""


@dataclasses.dataclass(frozen=True)
class Calls:
    """A run of `count` calls of `steps_per_call` steps each, starting `offset` steps into
    the epoch. The loop runs calls `first` to `count - 1` (`first > 0` when resuming inside
    the run); chunks of calls (one key derivation, one metric fold) count from call 0, so a
    resumed run folds the same steps together as an uninterrupted one."""

    steps_per_call: int
    offset: int
    count: int
    first: int = 0
    timed: bool = False  # a trial run: call 0 compiles, the others are timed

    @property
    def end(self) -> int:
        """The epoch position after the run's last step."""
        return self.offset + self.count * self.steps_per_call


def epoch_calls(k: int, num_batches: int, start: int = 0) -> list[Calls]:
    """From epoch position `start`: as many calls of `k` steps as fit, then single steps."""
    full = (num_batches - start) // k
    runs = []
    if full:
        runs.append(Calls(k, start, full))
    rest = start + full * k
    if rest < num_batches:
        runs.append(Calls(1, rest, num_batches - rest))
    return runs


def calls_from(runs: list[Calls], position: int) -> list[Calls]:
    """The part of `runs` from epoch position `position` on: runs that end before it are
    dropped; in the run it falls in, the calls before it are skipped, and a position inside
    a call is reached with single steps before that run's calls go on."""
    out: list[Calls] = []
    for run in runs:
        if run.end <= position:
            continue
        if run.offset >= position:
            out.append(run)
            continue
        k = run.steps_per_call
        done, inside = divmod(position - run.offset, k)
        if inside:
            upto = run.offset + (done + 1) * k
            out.append(Calls(1, position, upto - position))
            done += 1
        if done < run.count:
            out.append(dataclasses.replace(run, first=done, timed=False))
    return out


@dataclasses.dataclass(frozen=True)
class AutoChoice:
    """What `steps_per_call="auto"` chose, and on what evidence."""

    steps_per_call: int
    steps_per_second: dict[int, float]  # each K the trial timed (empty: no trial)
    epoch: int  # the 0-based epoch in which the choice took effect
    position: int  # the step of that epoch from which it did (where the trial ended)
    reason: str  # a sentence: why this K

    def line(self) -> str:
        """The one line `beagle run` prints."""
        return f"steps_per_call: auto chose {self.steps_per_call}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {
            "steps_per_call": self.steps_per_call,
            "steps_per_second": {str(k): v for k, v in self.steps_per_second.items()},
            "epoch": self.epoch,
            "position": self.position,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AutoChoice:
        return cls(
            steps_per_call=int(data["steps_per_call"]),
            steps_per_second={int(k): float(v) for k, v in data["steps_per_second"].items()},
            epoch=int(data["epoch"]),
            position=int(data["position"]),
            reason=str(data["reason"]),
        )


def trial_calls(k: int, offset: int) -> Calls:
    """One K of the trial: a call that compiles, then at least `TRIAL_STEPS` timed steps."""
    return Calls(k, offset, 1 + math.ceil(TRIAL_STEPS / k), timed=True)


def trial_length(ks: tuple[int, ...]) -> int:
    """Steps a trial of these K takes."""
    return sum(trial_calls(k, 0).count * k for k in ks)


def _rate(value: float) -> str:
    return f"{value:,.0f} steps/s"


def choose(steps_per_second: Mapping[int, float]) -> tuple[int, str]:
    """The K to keep, and why: the fastest larger K when it beats K = 1 by `MIN_GAIN`."""
    base = steps_per_second[1]
    larger = {k: v for k, v in steps_per_second.items() if k != 1}
    best = max(larger, key=larger.__getitem__)
    gain = larger[best] / base if base > 0 else math.inf
    others = "; ".join(f"K = {k}: {_rate(v)}" for k, v in sorted(larger.items()) if k != best)
    measured = f"K = {best}: {_rate(larger[best])} against K = 1: {_rate(base)} ({gain:.2f}x)"
    measured += f"; {others}" if others else ""
    if gain >= MIN_GAIN:
        return best, measured
    return 1, f"no larger K beat K = 1 by {MIN_GAIN - 1:.0%} ({measured})"


class AutoTrial:
    """`steps_per_call="auto"`: the trial and then the chosen K, epoch by epoch.

    `runs(epoch, position)` yields the epoch's `Calls` from `position`; the loop runs each
    before asking for the next, and reports each timed run's seconds with `timed`. The
    trial starts at the first position that has room for it (this epoch, else the next
    one); an epoch too short to hold it uses K = 1 and says so.
    """

    def __init__(
        self,
        num_batches: int,
        choice: AutoChoice | None,
        agree: Callable[[dict[int, float]], dict[int, float]] = lambda timings: timings,
    ) -> None:
        self.num_batches = num_batches
        self.choice = choice
        self.agree = agree  # with several processes: every process takes process 0's timings
        self.timings: dict[int, float] = {}
        self.needed = trial_length((1, AUTO_CANDIDATES[0]))
        if choice is None and num_batches < self.needed:
            self.choice = AutoChoice(
                1,
                {},
                0,
                0,
                f"an epoch of {num_batches} steps is too short for the trial ({self.needed} steps)",
            )

    def timed(self, calls: Calls, seconds: float) -> None:
        """The seconds a timed run's calls after the first took."""
        steps = (calls.count - 1) * calls.steps_per_call
        self.timings[calls.steps_per_call] = steps / seconds if seconds > 0 else math.inf

    def runs(self, epoch: int, position: int) -> Iterator[Calls]:
        """Epoch `epoch`'s runs of calls from `position` (lazily: the trial's decide the rest)."""
        if self.choice is None and position + self.needed <= self.num_batches:
            yield from self._trial(epoch, position)
            return
        if self.choice is None:  # no room left in this epoch: K = 1, the trial next epoch
            yield from epoch_calls(1, self.num_batches, position)
            return
        start = self.choice.position if epoch == self.choice.epoch else 0
        runs = epoch_calls(self.choice.steps_per_call, self.num_batches, min(start, position))
        yield from calls_from(runs, position)

    def _trial(self, epoch: int, position: int) -> Iterator[Calls]:
        self.timings = {}
        offset = position
        untried = ""
        for k in (1, *AUTO_CANDIDATES):
            calls = trial_calls(k, offset)
            if k != 1:
                agreed = self.agree(self.timings)
                if k == AUTO_CANDIDATES[0] and agreed[1] * LONG_STEP_SECONDS <= 1:
                    step_ms = 1000 / agreed[1]
                    reason = (
                        f"a K = 1 step takes {step_ms:.1f} ms ({_rate(agreed[1])}), bound by "
                        f"its computation: fusing steps saves per-call work far under "
                        f"{MIN_GAIN - 1:.0%} of that, so no larger K was tried"
                    )
                    self.choice = AutoChoice(1, agreed, epoch, offset, reason)
                    yield from epoch_calls(1, self.num_batches, offset)
                    return
                if self._winner(agreed) == 1:
                    break
            if calls.end > self.num_batches:
                untried = f"; K = {k} not tried: the epoch has no room for its trial"
                break
            yield calls
            offset = calls.end
        timings = self.agree(self.timings)
        k, reason = choose(timings)
        self.choice = AutoChoice(k, timings, epoch, offset, reason + untried)
        yield from epoch_calls(k, self.num_batches, offset)

    @staticmethod
    def _winner(timings: Mapping[int, float]) -> int:
        """The K `choose` keeps so far; 0 while only K = 1 has been timed."""
        return choose(timings)[0] if len(timings) > 1 else 0
