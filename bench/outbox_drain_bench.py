"""Outbox drain benchmark: the CPU a drain of N pending reports costs the agent.

    .venv/bin/python bench/outbox_drain_bench.py               # 1000 pending changes
    .venv/bin/python bench/outbox_drain_bench.py --pending 200

N distinct changes are put in a fresh outbox (a temporary directory), then Runner.drain() sends
them to a link that acknowledges at once (no network: what is timed is the agent's own work,
reading, parsing and removing reports). Reported: wall time and process CPU time of the drain.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rmsfleet.agent.config import AgentConfig
from rmsfleet.agent.enrollment import EnrollCredential
from rmsfleet.agent.outbox import Outbox
from rmsfleet.agent.runner import Runner
from rmsfleet.agent.transport import RpcFailure
from rmsfleet.contract.facts import Activation, ClientFacts, HostFacts, Version
from rmsfleet.v1 import inventory_pb2

FACTS = HostFacts("ws-1", "ws-1.corp.example", "corp.example", None, ClientFacts(Version.SP2, Activation.SELF, None))


class AckingLink:
    address = "bench:0"

    def report(self, request: inventory_pb2.ReportRequest, stop: threading.Event) -> inventory_pb2.ReportResponse:
        return inventory_pb2.ReportResponse(applied=True, acknowledged_sequence=request.sequence)

    def enroll(self, host_id: str, credential: EnrollCredential, stop: threading.Event) -> str:
        raise RpcFailure("UNIMPLEMENTED", "no enrollment")

    def explain(self, failure: RpcFailure) -> str:
        return str(failure)

    def close(self) -> None:
        pass


class FixedProbe:
    def read(self) -> HostFacts:
        return FACTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pending", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        with Outbox.in_state_dir(state, max_changes=args.pending) as outbox:
            start = datetime.now(UTC) - timedelta(days=1)
            for i in range(args.pending):
                facts = replace(FACTS, hostname=f"ws-1-v{i}.corp.example")  # a change each: no coalescing
                outbox.put(facts, start + timedelta(seconds=i))
            runner = Runner(AgentConfig(state_dir=state), FixedProbe(), outbox, [AckingLink()], threading.Event())
            wall, cpu = time.perf_counter(), time.process_time()
            assert runner.drain() is None
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            assert outbox.pending_count() == 0
    print(f"drain of {args.pending} pending reports: {wall:.2f} s wall, {cpu:.2f} s CPU")


if __name__ == "__main__":
    main()
