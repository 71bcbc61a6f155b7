"""The README's table of `rmsfleet-collector serve` flags is the parser's: every flag, its
environment variable and its default, no more and no fewer (a flag renamed, added or removed in
the code fails here until the README says so)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rmsfleet.collector.cli import build_parser
from rmsfleet.collector.config import ServeConfig

README = Path(__file__).resolve().parents[2] / "README.md"
HEADER = "| flag | variable | default |"


def readme_rows() -> dict[str, tuple[str, str]]:
    """flag -> (its variable, default cell). A row of two flags names two variables, in order."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(HEADER) + 2  # the header and its |---| line
    rows: dict[str, tuple[str, str]] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        flag_cell, variable_cell, default = (cell.strip() for cell in line.strip("|").split("|"))
        flags = re.findall(r"`(--[a-z-]+)", flag_cell)
        variables = re.findall(r"RMSFLEET_[A-Z_]+", variable_cell)
        assert len(flags) == len(variables), line
        for flag, variable in zip(flags, variables, strict=True):
            rows[flag] = (variable, default)
    return rows


def serve_options() -> dict[str, argparse.Action]:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    serve = subparsers.choices["serve"]
    return {a.option_strings[0]: a for a in serve._actions if a.option_strings and a.option_strings[0] != "-h"}


def test_the_table_lists_exactly_the_flags_of_serve() -> None:
    assert sorted(readme_rows()) == sorted(serve_options())


def test_each_row_names_the_variable_the_flag_reads() -> None:
    rows = readme_rows()
    for flag, action in serve_options().items():
        variables = set(re.findall(r"RMSFLEET_[A-Z_]+", action.help or ""))
        assert len(variables) == 1, f"{flag}: its help names no variable ({action.help})"
        assert {rows[flag][0]} == variables, flag


def test_the_defaults_are_the_configuration_defaults() -> None:
    defaults = ServeConfig()
    expected = {
        "--db": defaults.db_url,
        "--listen": defaults.listen,
        "--metrics-listen": defaults.metrics_listen,
        "--workers": f"{defaults.workers}",
        "--refresh-interval": f"{defaults.refresh_interval:g}",
        "--full-pass-interval": f"{defaults.full_pass_interval:g}",
        "--stale-after": f"{defaults.policy.stale_after.total_seconds():g}",
        "--mixed-cluster-grace": f"{defaults.policy.mixed_cluster_grace.total_seconds():g}",
    }
    rows = readme_rows()
    for flag, default in expected.items():
        cell = rows[flag][1].strip("`")
        assert cell.split()[0].strip("`") == default, f"{flag}: README says {rows[flag][1]!r}, the code {default!r}"
        assert default in (serve_options()[flag].help or ""), f"{flag}: its help does not say default {default}"
