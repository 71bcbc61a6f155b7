"""What every probe promises: `read()` returns validated HostFacts or raises ProbeError.

A probe is where the agent's facts come from (a facts file, or the Windows registry and the RMS
client API). The run loop only knows this interface, so it treats every source alike and a
failed read becomes one clear line for the operator instead of a traceback.
"""

from __future__ import annotations

from typing import Protocol

from rmsfleet.contract.facts import HostFacts


class ProbeError(Exception):
    """The probe cannot produce facts. The message is the one line the operator sees."""


class ProbeAccessDenied(ProbeError):
    """The agent's account may not read what the probe needs (a registry key, the RMS client).

    Kept apart from ProbeError so the agent can tell "fix the service account" from "this host
    is misconfigured": retrying does not help either, but the remedy differs.
    """

    def __init__(self, what: str, hint: str = "run the agent as LocalSystem or grant its account read access") -> None:
        super().__init__(f"access denied reading {what}: {hint}")
        self.what = what


class Probe(Protocol):
    def read(self) -> HostFacts:
        """Read the host's facts now. Raises ProbeError when it cannot."""
        ...
