"""Structure-aware fuzzing of a running collector (docs/limits.md, "Proof: fuzzing").

Starts `rmsfleet-collector serve` as a subprocess on SQLite or PostgreSQL (enrollment on, the
per-address limits raised so the fuzzer itself is not throttled), enrolls a pool of hosts, then
lets hypothesis build requests for Report, Enroll, every query RPC and every admin RPC (with an
admin token made the break-glass way, or with none, a forged one or a reader's): protobuf messages whose
fields come from valid values, values at and beyond each bound, control and format characters,
out-of-range enums, numbers and timestamps, plus the same messages' bytes mutated (truncated,
flipped, invalid UTF-8) and random bytes. Each example is a batch of calls sent at once.

What must hold:
- no call answered INTERNAL or UNKNOWN (a crash in a handler, or a request the edge let through);
- the collector process is alive and its health SERVING at the end, and its log has no traceback;
- every stored host and history row reads back through the facts contract (`validate`), every
  node key's host id is a valid identifier; the log never names the admin token;
- the database is sound: SQLite `PRAGMA integrity_check`, PostgreSQL amcheck's
  `bt_index_check(heapallindexed)` on every index.

    .venv/bin/python bench/fuzz_collector.py --db sqlite --inputs 20000
    .venv/bin/python bench/fuzz_collector.py --db postgres --inputs 20000

Prints inputs, inputs/s and the answers by status code; exits 1 on a finding. The test suite runs
`fuzz()` with a few thousand inputs (tests/integration/test_fuzz_small.py).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets as random_secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rmsfleet.collector.store.models import HostHistoryRow, HostRow, NodeKeyRow
from rmsfleet.collector.store.rows import UnreadableRow, facts_from_columns
from rmsfleet.contract.facts import MAX_ID_LENGTH, InvalidFacts, validate
from rmsfleet.contract.wire import check_wire_text
from rmsfleet.v1 import admin_pb2, facts_pb2, inventory_pb2, query_pb2

BIN = Path(sys.executable).parent
READY = re.compile(r"gRPC on \S+ \(port (\d+)\)")
SECRET = "fuzz-enrollment-secret"
POOL = 24  # hosts enrolled up front, so reports can carry a valid node key and reach the writer
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
ROUND = 5000  # calls per hypothesis run: progress is reported, and the time budget checked, in between
SERVICE = "/rmsfleet.v1."

# --- what a request is made of ---------------------------------------------------------------

IDS = ["ws-1.corp.example", "ams-rms-01", "corp.example", "fabrikam.example", "a", "WS-1", "ws-1 "]
URLS = ["https://rms.corp.example", "https://lic.corp.example/_wmcs", "http://rms:80", "https://x.invalid"]
NASTY = [
    "\x00",
    "\x1b[2J",
    "\n",
    "\r\n",
    "\t",
    "\u202e",
    "\u200b",
    "\ufeff",
    "\u2028",
    "\x85",
    "\x7f",
    "'; --",
    "é",
    "😀",
]


def text(bound: int) -> st.SearchStrategy[str]:
    """Strings around a field's bound: valid ones, empty and blank, the bound and one past it in
    one-, two- and four-byte characters, unsafe characters, and hypothesis's own text."""
    return st.one_of(
        st.sampled_from(IDS + URLS + ["", " "]),
        st.text(max_size=24),
        st.builds(lambda a, n, b: a + n + b, st.sampled_from(IDS + URLS), st.sampled_from(NASTY), st.text(max_size=4)),
        st.builds(
            lambda ch, n: ch * n, st.sampled_from(["a", "é", "😀"]), st.sampled_from([bound - 1, bound, bound + 1])
        ),
    )


ENUM = st.one_of(st.integers(0, 6), st.integers(-(2**31), 2**31 - 1))
U64 = st.one_of(st.integers(0, 2**16), st.sampled_from([2**63 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
TIMESTAMP = st.builds(
    lambda s, n: Timestamp(seconds=s, nanos=n),
    st.one_of(st.integers(946_684_800, int(time.time()) + 200_000), st.integers(-(2**62), 2**62)),
    st.one_of(st.just(0), st.integers(0, 999_999_999), st.integers(-(2**31), 2**31 - 1)),
)


def facts_message(host_ids: st.SearchStrategy[str]) -> st.SearchStrategy[facts_pb2.HostFacts]:
    server = st.builds(
        facts_pb2.ServerFacts,
        version=ENUM,
        cluster=text(2048),
        cluster_kind=ENUM,
        root_cluster=st.one_of(st.just(""), text(2048)),
        enrollment=ENUM,
    )

    def client(version: Any, activation: Any, cluster: str, users: int | None) -> facts_pb2.ClientFacts:
        message = facts_pb2.ClientFacts(version=version, activation=activation, cluster=cluster)
        if users is not None:
            message.activated_users = users
        return message

    clients = st.builds(
        client,
        ENUM,
        ENUM,
        st.one_of(st.just(""), text(2048)),
        st.one_of(st.none(), st.integers(0, 200_000), st.just(2**32 - 1)),
    )
    return st.builds(
        lambda host_id, hostname, forest, s, c: facts_pb2.HostFacts(
            host_id=host_id, hostname=hostname, forest=forest, server=s, client=c
        ),
        host_ids,
        text(MAX_ID_LENGTH),
        text(MAX_ID_LENGTH),
        st.one_of(st.none(), server),
        st.one_of(st.none(), clients),
    )


@dataclass
class Pool:
    """Hosts enrolled before fuzzing: (host id, node key)."""

    keys: list[tuple[str, str]] = field(default_factory=list)


def valid_facts() -> st.SearchStrategy[facts_pb2.HostFacts]:
    """Facts the contract accepts, so that keyed reports reach the writer and the database."""
    server = st.builds(
        lambda v, url, kind, online: facts_pb2.ServerFacts(
            version=v,
            cluster=url,
            cluster_kind=kind,
            root_cluster="https://rms.corp.example" if kind == facts_pb2.CLUSTER_KIND_LICENSING else "",
            enrollment=facts_pb2.ENROLLMENT_ONLINE if online else facts_pb2.ENROLLMENT_OFFLINE,
        ),
        st.sampled_from(
            [facts_pb2.VERSION_RTM, facts_pb2.VERSION_SP1, facts_pb2.VERSION_SP2, facts_pb2.VERSION_UNKNOWN]
        ),
        st.sampled_from(URLS[1:]),
        st.sampled_from([facts_pb2.CLUSTER_KIND_ROOT_CERTIFICATION, facts_pb2.CLUSTER_KIND_LICENSING]),
        st.booleans(),
    )
    client = st.builds(
        lambda v, a, url: facts_pb2.ClientFacts(version=v, activation=a, cluster=url),
        st.sampled_from([facts_pb2.VERSION_SP1, facts_pb2.VERSION_SP2, facts_pb2.VERSION_BUILTIN]),
        st.sampled_from([facts_pb2.ACTIVATION_SELF, facts_pb2.ACTIVATION_NONE]),
        st.sampled_from(["", *URLS]),
    )
    return st.builds(
        lambda name, forest, s, c: facts_pb2.HostFacts(
            host_id=name, hostname=name, forest=forest, server=s, client=c if c is not None or s is not None else None
        ),
        st.sampled_from(IDS[:4]),
        st.sampled_from(["corp.example", "fabrikam.example", "émea.example"]),
        st.one_of(st.none(), server),
        client,
    )


def report(pool: Pool) -> st.SearchStrategy[Message]:
    def build(
        facts: facts_pb2.HostFacts,
        pick: int,
        keyed: bool,
        stamp: Timestamp,
        now: bool,
        sequence: int,
        ahead: bool,
        version: str,
        key: str,
    ) -> Message:
        request = inventory_pb2.ReportRequest(facts=facts, agent_version=version)
        if keyed and pool.keys:
            host_id, node_key = pool.keys[pick % len(pool.keys)]
            request.facts.host_id = host_id
            request.node_key = node_key
        else:
            request.node_key = key
        if now:
            request.observed_at.GetCurrentTime()
        else:
            request.observed_at.CopyFrom(stamp)
        # Sequences near an agent's (the clock in microseconds) reach the writer; others test the ceiling.
        request.sequence = (int(time.time() * 1_000_000) + sequence) % 2**64 if ahead else sequence
        return request

    return st.builds(
        build,
        st.one_of(valid_facts(), facts_message(text(MAX_ID_LENGTH))),
        st.integers(0, 10_000),
        st.booleans(),
        TIMESTAMP,
        st.booleans(),
        U64,
        st.booleans(),
        text(64),
        st.one_of(st.just(""), text(256)),
    )


def keyed_report(pool: Pool) -> st.SearchStrategy[Message]:
    """A report the collector takes: valid facts, a pool host's key, now, a sequence after the last."""

    def build(facts: facts_pb2.HostFacts, pick: int, step: int, version: str) -> Message:
        host_id, node_key = pool.keys[pick % len(pool.keys)] if pool.keys else ("fz-0", "")
        request = inventory_pb2.ReportRequest(facts=facts, agent_version=version, node_key=node_key)
        request.facts.host_id = host_id
        request.observed_at.GetCurrentTime()
        request.sequence = int(time.time() * 1_000_000) + step
        return request

    return st.builds(
        build, valid_facts(), st.integers(0, 10_000), st.integers(0, 1000), st.sampled_from(["1.0", "fuzz", ""])
    )


def enroll() -> st.SearchStrategy[Message]:
    return st.builds(
        inventory_pb2.EnrollRequest,
        host_id=st.one_of(text(MAX_ID_LENGTH), st.builds(lambda n: f"fz-{n}", st.integers(0, POOL * 2))),
        enroll_secret=st.one_of(st.just(SECRET), text(1024)),
    )


def page_token() -> st.SearchStrategy[str]:
    import base64

    return st.one_of(
        st.just(""),
        text(11_000),
        st.builds(lambda raw: base64.urlsafe_b64encode(raw).decode("ascii"), st.binary(max_size=64)),
        st.builds(lambda t: base64.urlsafe_b64encode(t.encode("utf-8", "surrogatepass")).decode("ascii"), text(2048)),
    )


def plan_token() -> st.SearchStrategy[str]:
    """Tokens of GetPlan's form (generation:plan id:first entry), with any numbers."""
    import base64

    return st.builds(
        lambda g, i, n: base64.urlsafe_b64encode(f"{g}:{i}:{n}".encode()).decode("ascii"),
        st.integers(-1, 2**64),
        st.one_of(st.text("0123456789abcdef", min_size=16, max_size=16), text(20)),
        st.integers(-1, 2**64),
    )


PAGE = st.one_of(st.integers(-5, 1100), st.integers(-(2**31), 2**31 - 1))


def queries() -> st.SearchStrategy[tuple[str, Message]]:
    return st.one_of(
        st.builds(
            lambda *a: (
                "QueryService/ListHosts",
                query_pb2.ListHostsRequest(
                    page_size=a[0], page_token=a[1], role=a[2], version=a[3], cluster=a[4], forest=a[5], stale_only=a[6]
                ),
            ),
            PAGE,
            page_token(),
            st.one_of(st.sampled_from(["", "server", "client"]), text(255)),
            ENUM,
            text(2048),
            text(255),
            st.booleans(),
        ),
        st.builds(lambda h: ("QueryService/GetHost", query_pb2.GetHostRequest(host_id=h)), text(MAX_ID_LENGTH)),
        st.builds(
            lambda *a: ("QueryService/ListViolations", _violations(*a)),
            PAGE,
            page_token(),
            text(64),
            st.one_of(st.sampled_from(["", "warning", "critical"]), text(255)),
            st.one_of(st.sampled_from(["", "open", "resolved", "all"]), text(255)),
            st.one_of(st.none(), TIMESTAMP),
        ),
        st.builds(
            lambda p, t: ("QueryService/ListClusters", query_pb2.ListClustersRequest(page_size=p, page_token=t)),
            PAGE,
            page_token(),
        ),
        st.builds(
            lambda p, t: ("QueryService/ListExemptions", query_pb2.ListExemptionsRequest(page_size=p, page_token=t)),
            PAGE,
            page_token(),
        ),
        st.builds(
            lambda m, f, p, t: (
                "QueryService/GetPlan",
                query_pb2.GetPlanRequest(max_unavailable=m, forest=f, page_size=p, page_token=t),
            ),
            st.floats(allow_nan=True, allow_infinity=True),
            text(255),
            PAGE,
            st.one_of(page_token(), plan_token()),
        ),
    )


DURATION = st.one_of(
    st.none(),
    st.builds(
        lambda s, n: Duration(seconds=s, nanos=n),
        st.one_of(st.integers(-10, 4_000_000), st.integers(-(2**62), 2**62)),
        st.integers(-999_999_999, 999_999_999),
    ),
)


def _with(message: Message, name: str, value: Message | None) -> Message:
    if value is not None:
        getattr(message, name).CopyFrom(value)
    return message


def admin_calls() -> st.SearchStrategy[tuple[str, Message]]:
    """Every AdminService method, with values at and beyond each field's bound."""
    return st.one_of(
        st.builds(
            lambda p, k, sub, r, e: (
                "AdminService/AddExemption",
                _with(admin_pb2.AddExemptionRequest(policy=p, subject_kind=k, subject=sub, reason=r), "expires_at", e),
            ),
            st.one_of(st.sampled_from(["stale-agent", "mixed-versions-in-cluster"]), text(64)),
            st.one_of(st.sampled_from(["host", "cluster", "forest"]), text(16)),
            text(2100),
            text(1100),
            st.one_of(st.none(), TIMESTAMP),
        ),
        st.builds(
            lambda i: ("AdminService/RemoveExemption", admin_pb2.RemoveExemptionRequest(id=i)),
            st.one_of(st.integers(0, 50), st.integers(0, 2**64 - 1)),
        ),
        st.builds(lambda h: ("AdminService/RevokeHost", admin_pb2.RevokeHostRequest(host_id=h)), text(300)),
        st.builds(
            lambda h, d: (
                "AdminService/AllowReenroll",
                _with(admin_pb2.AllowReenrollRequest(host_id=h), "duration", d),
            ),
            text(300),
            DURATION,
        ),
        st.builds(
            lambda n, r, d: (
                "AdminService/CreateToken",
                _with(admin_pb2.CreateTokenRequest(name=n, role=r), "expires_in", d),
            ),
            st.one_of(st.builds(lambda i: f"fz-token-{i}", st.integers(0, 50)), text(80)),
            st.one_of(st.sampled_from(["reader", "admin", "scanner"]), text(20)),
            DURATION,
        ),
        st.builds(lambda n: ("AdminService/RevokeToken", admin_pb2.RevokeTokenRequest(name=n)), text(80)),
        st.builds(
            lambda p, t: ("AdminService/ListTokens", admin_pb2.ListTokensRequest(page_size=p, page_token=t)),
            PAGE,
            page_token(),
        ),
        st.builds(
            lambda p, t: ("AdminService/ListAudit", admin_pb2.ListAuditRequest(page_size=p, page_token=t)),
            PAGE,
            page_token(),
        ),
    )


def _violations(size: int, token: str, policy: str, severity: str, state: str, since: Timestamp | None) -> Message:
    request = query_pb2.ListViolationsRequest(
        page_size=size, page_token=token, policy=policy, severity=severity, state=state
    )
    if since is not None:
        request.since.CopyFrom(since)
    return request


def mutate(data: bytes, how: int, where: int, byte: int) -> bytes:
    """Broken wire bytes: truncated, a byte changed, invalid UTF-8 spliced in, or doubled."""
    if not data:
        return bytes([byte])
    at = where % len(data)
    if how == 0:
        return data[:at]
    if how == 1:
        return data[:at] + bytes([byte]) + data[at + 1 :]
    if how == 2:
        return data[:at] + b"\xff\xfe\xc0" + data[at:]
    return data + data


def calls(pool: Pool) -> st.SearchStrategy[tuple[str, bytes, str]]:
    structured = st.one_of(
        st.tuples(st.just("InventoryService/Report"), report(pool)),
        st.tuples(st.just("InventoryService/Report"), keyed_report(pool)),
        st.tuples(st.just("InventoryService/Enroll"), enroll()),
        queries(),
        admin_calls(),
    )

    def encoded(call: tuple[str, Message]) -> tuple[str, bytes]:
        return call[0], call[1].SerializeToString()

    plain = structured.map(encoded)
    broken = st.builds(
        lambda call, how, where, byte: (call[0], mutate(call[1], how, where, byte)),
        plain,
        st.integers(0, 3),
        st.integers(0, 2**16),
        st.integers(0, 255),
    )
    noise = st.tuples(
        st.sampled_from(
            [
                "InventoryService/Report",
                "InventoryService/Enroll",
                "QueryService/ListHosts",
                "QueryService/GetPlan",
                "AdminService/AddExemption",
            ]
        ),
        st.binary(max_size=128),
    )
    # Which credential a call carries: the admin token most often (to reach the store), else none,
    # a forged token or a malformed header (to exercise the refusals and their audit rows).
    credential = st.sampled_from(["admin", "admin", "admin", "none", "forged", "malformed"])
    return st.tuples(st.one_of(plain, plain, plain, broken, noise), credential).map(lambda t: (*t[0], t[1]))


# --- the collector under test ------------------------------------------------------------------


@dataclass
class Target:
    process: subprocess.Popen[str]
    address: str
    db_url: str
    log_path: Path
    admin_token: str = ""

    def metadata(self, credential: str) -> tuple[tuple[str, str], ...]:
        if credential == "admin":
            return (("authorization", f"Bearer {self.admin_token}"),)
        if credential == "forged":
            return (("authorization", f"Bearer {self.admin_token[:-4]}AAAA"),)
        if credential == "malformed":
            return (("authorization", "Basic " + "x" * 200),)
        return ()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_target(db_url: str, workdir: Path) -> Target:
    secret_file = workdir / "enroll.secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    log_path = workdir / "collector.log"
    process = subprocess.Popen(
        [
            str(BIN / "rmsfleet-collector"),
            "serve",
            "--db",
            db_url,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--enroll-secret-file",
            str(secret_file),
            # The fuzzer is one address sending batches: it must not be throttled by the limits it is not testing.
            "--enroll-per-minute",
            "100000000",
            "--max-calls-per-peer",
            "64",
            "--refresh-interval",
            "0.5",
        ],
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = READY.search(log_path.read_text())
        if match:
            target = Target(process, f"127.0.0.1:{match.group(1)}", db_url, log_path)
            if health(target) == health_pb2.HealthCheckResponse.SERVING:
                target.admin_token = admin_token(db_url)
                return target
        if process.poll() is not None:
            raise RuntimeError(f"collector exited with {process.returncode}:\n{log_path.read_text()}")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"collector did not start:\n{log_path.read_text()}")


def admin_token(db_url: str) -> str:
    """An admin token for the run, made the break-glass way (the database exists by now)."""
    done = subprocess.run(
        [str(BIN / "rmsfleet-collector"), "tokens", "create", "fuzz-admin", "--role", "admin", "--db", db_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tokens create failed: {done.stderr}")
    return done.stdout.strip()


def health(target: Target) -> int:
    with grpc.insecure_channel(target.address) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            status: int = stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        except grpc.RpcError:
            return -1
        return status


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Findings:
    inputs: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def enroll_pool(channel: grpc.Channel, pool: Pool) -> None:
    call: Any = channel.unary_unary(
        SERVICE + "InventoryService/Enroll",
        request_serializer=None,
        response_deserializer=inventory_pb2.EnrollResponse.FromString,
    )
    for n in range(POOL):
        host_id = f"fz-{n}"
        response = call(
            inventory_pb2.EnrollRequest(host_id=host_id, enroll_secret=SECRET).SerializeToString(), timeout=10
        )
        pool.keys.append((host_id, response.node_key))


def run_round(
    pool: Pool,
    send: Callable[[str], Any],
    metadata: Callable[[str], tuple[tuple[str, str], ...]],
    findings: Findings,
    examples: int,
    seed_value: int,
    batch: int,
) -> None:
    """One hypothesis run of `examples` batches, each sent at once; answers counted in `findings`."""

    @seed(seed_value)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(calls(pool), min_size=1, max_size=batch))
    def run(batch_calls: list[tuple[str, bytes, str]]) -> None:
        futures = [
            (method, data, send(method).future(data, timeout=30, metadata=metadata(credential)))
            for method, data, credential in batch_calls
        ]
        for method, data, future in futures:
            findings.inputs += 1
            name = method.rsplit("/", 1)[-1]
            try:
                future.result()
                findings.codes[f"{name} OK"] += 1
            except grpc.RpcError as exc:
                code = exc.code()
                findings.codes[f"{name} {code.name}"] += 1
                # A reply that grows with the input until the client refuses it is a finding too.
                grew = "metadata size exceeds" in (exc.details() or "")
                if (code in FORBIDDEN or grew) and len(findings.problems) < 20:
                    findings.problems.append(f"{method} answered {code.name} ({exc.details()}) to {data[:200]!r}")

    run()


def fuzz(
    db_url: str,
    inputs: int,
    *,
    seed_value: int = 0,
    batch: int = 16,
    workdir: Path | None = None,
    max_seconds: float | None = None,
    progress: Callable[[Findings], None] | None = None,
) -> Findings:
    """Fuzz a fresh collector on `db_url` with `inputs` calls (or as many as `max_seconds` allow);
    returns what was seen. `progress` is called after each round of at most ROUND calls."""
    findings = Findings()
    with tempfile.TemporaryDirectory(prefix="rmsfleet-fuzz-") as scratch:
        target = start_target(db_url, workdir or Path(scratch))
        try:
            with grpc.insecure_channel(
                target.address, options=[("grpc.max_send_message_length", 8 * 1024 * 1024)]
            ) as channel:
                pool = Pool()
                enroll_pool(channel, pool)
                senders: dict[str, Callable[..., Any]] = {}

                def send(method: str) -> Callable[..., Any]:
                    if method not in senders:
                        senders[method] = channel.unary_unary(
                            SERVICE + method, request_serializer=None, response_deserializer=None
                        )
                    return senders[method]

                started = time.monotonic()
                round_number = 0
                stop_at = None if max_seconds is None else started + max_seconds
                while findings.inputs < inputs and (stop_at is None or time.monotonic() < stop_at):
                    # A batch holds (1 + batch) / 2 calls on average; rounds go on until the count is reached.
                    examples = max(1, min(inputs - findings.inputs, ROUND) * 2 // (batch + 1))
                    run_round(pool, send, target.metadata, findings, examples, seed_value + round_number, batch)
                    round_number += 1
                    findings.seconds = time.monotonic() - started
                    if progress is not None:
                        progress(findings)
            if target.process.poll() is not None:
                findings.problems.append(f"the collector exited with {target.process.returncode}")
            elif health(target) != health_pb2.HealthCheckResponse.SERVING:
                findings.problems.append("health is not SERVING after the run")
        finally:
            if target.process.poll() is None:
                target.process.terminate()
                target.process.wait(60)
        log = target.log()
        for sign in CRASH_SIGNS:
            found = sign.search(log)
            if found:
                at = found.start()
                findings.problems.append(
                    f"the collector's log has {found.group(0)!r}: {log[max(0, at - 300) : at + 500]}"
                )
        if target.admin_token and target.admin_token in log:
            findings.problems.append("the collector's log names the admin token")
        findings.problems.extend(check_database(db_url))
    return findings


# What a crash leaves in the log, anchored where only the logging machinery writes: a fuzzed
# value is escaped onto the line of the message that names it, so it can say "Traceback" (and
# hypothesis, which mines string constants from this very file, makes it say so) but never start
# a line or stand in the logger-name position of gRPC's own handler errors.
CRASH_SIGNS = (
    re.compile(r"^Traceback \(most recent call last\):", re.M),
    re.compile(r"^\S+ \S+ \w+ grpc\._server: Exception (calling application|deserializing)", re.M),
)


def check_database(db_url: str) -> list[str]:
    """Every stored row read back through the contract, and the database's own integrity check."""
    problems: list[str] = []
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as connection:
            for name, table in (("hosts", HostRow.__table__), ("host_history", HostHistoryRow.__table__)):
                for row in connection.execute(sqlalchemy.select(table)):
                    try:
                        validate(facts_from_columns(row.host_id, row))
                    except (UnreadableRow, InvalidFacts) as exc:
                        problems.append(f"{name} row of {row.host_id!r} breaks the facts contract: {exc}")
            for (host_id,) in connection.execute(sqlalchemy.select(NodeKeyRow.host_id)):
                try:
                    check_wire_text("host_id", host_id, MAX_ID_LENGTH, required=True)
                except InvalidFacts as exc:
                    problems.append(f"node_keys row {host_id!r}: {exc}")
            if engine.dialect.name == "sqlite":
                verdict = [r[0] for r in connection.execute(sqlalchemy.text("PRAGMA integrity_check"))]
                if verdict != ["ok"]:
                    problems.append(f"PRAGMA integrity_check: {verdict[:5]}")
            else:
                connection.execute(sqlalchemy.text("CREATE EXTENSION IF NOT EXISTS amcheck"))
                indexes = connection.execute(
                    sqlalchemy.text(
                        "SELECT c.oid, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "JOIN pg_am am ON am.oid = c.relam WHERE am.amname = 'btree' "
                        "AND c.relnamespace = 'public'::regnamespace"
                    )
                ).all()
                for oid, name in indexes:
                    try:
                        connection.execute(sqlalchemy.text("SELECT bt_index_check(:oid, true)"), {"oid": oid})
                    except sqlalchemy.exc.DBAPIError as exc:
                        problems.append(f"amcheck on index {name}: {str(exc).splitlines()[0]}")
                connection.commit()
    finally:
        engine.dispose()
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite", help="sqlite, postgres, or a database URL")
    parser.add_argument("--inputs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long, whatever the count")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("RMSFLEET_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
        help="admin URL for the scratch PostgreSQL database",
    )
    args = parser.parse_args()
    seed_value = args.seed if args.seed is not None else random_secrets.randbelow(2**31)
    with tempfile.TemporaryDirectory(prefix="rmsfleet-fuzz-db-") as folder:
        scratch = None
        if args.db == "sqlite":
            url = f"sqlite:///{Path(folder) / 'fuzz.db'}"
        elif args.db == "postgres":
            from bench.scratch_db import create_postgres

            scratch = f"rmsfleet_fuzz_{os.getpid()}"
            url = create_postgres(args.postgres, scratch)
        else:
            url = args.db
        try:
            findings = fuzz(
                url,
                args.inputs,
                seed_value=seed_value,
                max_seconds=args.seconds,
                progress=lambda f: print(
                    f"... {f.inputs} inputs in {f.seconds:.0f} s, {len(f.problems)} finding(s)",
                    file=sys.stderr,
                    flush=True,
                ),
            )
        finally:
            if scratch is not None:
                from bench.scratch_db import drop_postgres

                drop_postgres(args.postgres, scratch)
    rate = findings.inputs / findings.seconds if findings.seconds else 0.0
    print(f"db={args.db} seed={seed_value} inputs={findings.inputs} seconds={findings.seconds:.1f} inputs/s={rate:.0f}")
    print("answers: " + ", ".join(f"{code} {n}" for code, n in findings.codes.most_common()))
    for problem in findings.problems:
        print(f"FINDING: {problem}")
    return 1 if findings.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
