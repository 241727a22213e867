"""Problems: what is wrong with a spec, where, and what would be right.

A `Problem` is a value, never raised on its own: the front end collects every problem of
a spec and hands them back at once inside a `SpecError`. `str(problem)` is the exact text
the command line prints:

    specs/mnist.yaml:14:5: losses.ce.weight: expected a number, got 'high'
      hint: ...

A problem that comes from a `--set KEY=VALUE` override rather than from the file has no
line and column; its "file" is the override itself (`--set train.epochs=0: train.epochs: ...`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "Problem",
    "SpecError",
    "abbreviates",
    "closest",
    "choices_hint",
    "did_you_mean",
    "format_path",
    "format_problems",
    "plural",
    "sort_problems",
]

PathTuple = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, located at the key or value to change."""

    file: str  # the spec's path as given on the command line, or `--set KEY=VALUE`
    line: int | None  # 1-based; None for a problem with no position in a file
    column: int | None  # 1-based
    path: str  # dotted path of the field (`losses.ce.weight`, `model.input[1]`), "" for the file
    message: str  # what is wrong
    hint: str | None = None  # what would be right, when there is something useful to say

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.column if self.column is not None else 1}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class SpecError(Exception):
    """A spec that cannot be used; `.problems` holds every problem found, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__(format_problems(self.problems))

    def __str__(self) -> str:
        return format_problems(self.problems)


def format_problems(problems: Iterable[Problem]) -> str:
    """The text `beagle check` prints: one problem (and its hint line) after another."""
    return "\n".join(str(problem) for problem in problems)


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """File problems in line order, then override problems; duplicates dropped."""
    seen: set[Problem] = set()
    unique = []
    for problem in problems:
        if problem not in seen:
            seen.add(problem)
            unique.append(problem)
    return sorted(
        unique,
        key=lambda p: (
            p.line is None,
            p.file if p.line is None else "",
            p.line or 0,
            p.column or 0,
        ),
    )


def format_path(path: Sequence[str | int]) -> str:
    """`("model", "input", 1)` -> `model.input[1]`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def closest(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to `word` (difflib), best first."""
    return difflib.get_close_matches(word, sorted(set(candidates)), n=n, cutoff=0.6)


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """`1 item`, `2 items`, `0 items` (`plural_noun` for irregular words: `1 batch`)."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {plural_noun or noun + 's'}"


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def did_you_mean(word: str, candidates: Iterable[str], what: str = "valid choices") -> str | None:
    """`did you mean 'x'?` when a candidate is close, else the valid choices (None if none)."""
    pool = sorted(set(candidates))
    near = closest(word, pool) or [c for c in pool if abbreviates(word, c)][:3]
    if near:
        return f"did you mean {_either(near)}?"
    return choices_hint(pool, what)


def _either(names: Sequence[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def abbreviates(short: str, name: str) -> bool:
    """`lr` abbreviates `learning_rate`: same first letter, letters in order, shorter."""
    if len(short) < 2 or len(short) >= len(name) or short[0] != name[0]:
        return False
    rest = iter(name)
    return all(char in rest for char in short)


def choices_hint(candidates: Iterable[str], what: str = "valid choices") -> str | None:
    """`valid choices: 'a', 'b'` (None when there are none)."""
    pool = sorted(set(candidates))
    if not pool:
        return None
    return f"{what}: {_quoted(pool)}"
