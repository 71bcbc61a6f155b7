"""Just enough PromQL reading to check which metrics and labels an expression uses.

Not a parser: it finds the series names an expression selects (identifiers that are not
functions, aggregations, keywords, label names or durations) and the label matchers of each
selector. The deploy tests check those against the metric catalogue; promtool checks syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")
_BRACES = re.compile(r"\{[^}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])[a-zA-Z_:][\w:]*")
_SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"""([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless", "atan2"}
)


@dataclass(frozen=True, slots=True)
class Matcher:
    label: str
    op: str
    value: str


@dataclass(frozen=True, slots=True)
class Selector:
    metric: str | None
    matchers: tuple[Matcher, ...]


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(0)
        if name in _KEYWORDS or name.lower() in {"inf", "nan"}:
            continue
        if text[match.end() :].lstrip().startswith("("):  # a function or an aggregation
            continue
        names.add(name)
    return names


def selectors(expr: str) -> list[Selector]:
    """Every selector with label matchers, e.g. `up{job="x"}` -> Selector("up", (job = x,))."""
    found: list[Selector] = []
    for match in _SELECTOR.finditer(expr):
        matchers = tuple(Matcher(label, op, quoted[1:-1]) for label, op, quoted in _MATCHER.findall(match.group(2)))
        found.append(Selector(match.group(1), matchers))
    return found
