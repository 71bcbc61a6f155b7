"""The demo: `python3 scripts/demo.py`. Sets itself up, starts a collector on SQLite, has real
agents report the sample fleet in examples/fleet/ (32 hosts, two forests, root and licensing
clusters), prints the violations and clusters, shows where the alerts go (Prometheus and
Alertmanager, when installed), and keeps serving until Ctrl-C."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bootstrap import ROOT, ensure_venv

ensure_venv("collector")

import argparse  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import demo_alerts  # noqa: E402

BIN = Path(sys.executable).parent
FLEET = ROOT / "examples" / "fleet"
STATE = ROOT / ".rmsfleet"


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise SystemExit("no free port on 127.0.0.1")


def wait_until_serving(address: str, collector: subprocess.Popen[bytes], log: Path) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + 30
    with grpc.insecure_channel(address) as channel:
        # types-grpcio-health-checking leaves the generated Check method out of HealthStub.
        check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]
        while time.monotonic() < deadline:
            if collector.poll() is not None:
                raise SystemExit(f"the collector exited early; its log:\n{log.read_text()}")
            try:
                if check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise SystemExit(f"the collector did not start within 30 s; its log:\n{log.read_text()}")


def report(address: str, facts: Path) -> tuple[Path, int, str]:
    done = subprocess.run(
        [
            str(BIN / "rmsfleet-agent"),
            "--collector",
            address,
            "--facts",
            str(facts),
            "--once",
            "--log-level",
            "WARNING",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return facts, done.returncode, done.stderr.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-wait", action="store_true", help="stop after printing (for scripts and tests)")
    parser.add_argument("--state-dir", type=Path, default=STATE, help=f"database and logs (default {STATE})")
    args = parser.parse_args()
    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    db = state / "demo.db"
    for leftover in state.glob("demo.db*"):
        leftover.unlink()
    grpc_address = f"127.0.0.1:{free_port(50051)}"
    metrics_address = f"127.0.0.1:{free_port(9464)}"
    log = state / "demo-collector.log"
    alerts: demo_alerts.AlertStack | None = None
    with log.open("wb") as log_file:
        collector = subprocess.Popen(
            [
                str(BIN / "rmsfleet-collector"),
                "serve",
                "--db",
                f"sqlite:///{db}",
                "--listen",
                grpc_address,
                "--metrics-listen",
                metrics_address,
                "--refresh-interval",
                "2",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_serving(grpc_address, collector, log)
        print(f"collector serving gRPC on {grpc_address} (SQLite database {db})")
        files = sorted(FLEET.glob("*.json"))
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda f: report(grpc_address, f), files))
        failed = [(f, err) for f, code, err in results if code != 0]
        print(
            f"{len(files) - len(failed)} of {len(files)} agents reported the sample fleet from {FLEET.relative_to(ROOT)}/"
        )
        for facts, err in failed:
            print(f"  {facts.name}: {err}")
        cli = [str(BIN / "rmsfleet-collector")]
        for title, command in (
            # every agent was acknowledged: wait until evaluation has covered all their reports
            ("Open violations", ["violations", "--wait-for-evaluation"]),
            ("Clusters and what they can do (D9-D12)", ["clusters"]),
            ("Upgrade plan to SP2 (D1, D2, D4-D7)", ["plan"]),
        ):
            print(f"\n== {title} ==")
            subprocess.run([*cli, *command, "--collector", grpc_address], check=False)
        print(
            f"\nMetrics:    http://{metrics_address}/metrics\n"
            f"Try:        {BIN / 'rmsfleet-collector'} hosts --collector {grpc_address}\n"
            f"            {BIN / 'rmsfleet-collector'} violations --json --collector {grpc_address}\n"
            f"Collector log: {log}"
        )
        print("\n== Alerts: where to look ==")
        alerts = demo_alerts.start(state / "monitoring", metrics_address, free_port)
        if alerts is not None:
            alerts.show()
        if args.no_wait:
            return 0
        print("Serving until Ctrl-C" + (" (new notifications print as they arrive)" if alerts else "") + " ...")
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while collector.poll() is None:
            time.sleep(1)
        print(f"the collector stopped; its log: {log}")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if alerts is not None:
            alerts.stop()
        collector.terminate()
        collector.wait(30)


if __name__ == "__main__":
    raise SystemExit(main())
