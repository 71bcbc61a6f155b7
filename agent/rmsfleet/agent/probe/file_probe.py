"""The file probe: facts come from a facts file (design.md, contract 1).

Used off Windows (the simulator and tests write facts files), and on Windows when an operator
prefers to produce the facts by other means. The file is re-read on every `read()`, so a host
whose facts change (an upgrade, a rollback: D13) reports the change without an agent restart.
"""

from __future__ import annotations

from pathlib import Path

from rmsfleet.agent.probe.base import ProbeError
from rmsfleet.contract.facts import FactsFileError, HostFacts, load_facts_file


class FileProbe:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> HostFacts:
        try:
            return load_facts_file(self.path)
        except FactsFileError as exc:
            # load_facts_file already words the message as `FILE: FIELD: expected ...`.
            raise ProbeError(str(exc)) from exc

    def __repr__(self) -> str:
        return f"FileProbe({str(self.path)!r})"
