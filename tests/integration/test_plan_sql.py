"""What the planner reads (store/plan_sql.py) on SQLite and PostgreSQL: the same facts the
evaluator reads, a damaged row left out the same way, the forest filtered in SQL; and the facts
generation the plan cache keys on moves with every fact change and only then."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from plan_fleet import plan_fleet
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.reports import IncomingReport
from rmsfleet.collector.store.database import create_db_engine, upgrade_to_head
from rmsfleet.collector.store.evaluation_sql import load_fleet
from rmsfleet.collector.store.ingest_writes import apply_reports
from rmsfleet.collector.store.plan_sql import facts_generation, load_plan_hosts

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
FLEET = plan_fleet(200, seed=3)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    made = sessionmaker(engine)
    with made.begin() as session:
        apply_reports(session, [IncomingReport(f, NOW, 1, "test", NOW) for f in FLEET])
        # A row this collector cannot read (a newer release's version name): left out.
        session.execute(text("UPDATE hosts SET client_version = 'SP9' WHERE host_id = 'h0001'"))
    yield made
    engine.dispose()


def test_the_planner_reads_the_facts_the_evaluator_reads(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        evaluated = {h.facts for h in load_fleet(session, with_history=False).hosts}
        planned = load_plan_hosts(session, None)
        lab = load_plan_hosts(session, "lab.example")
    assert {h.facts for h in planned} == evaluated and len(planned) == len(FLEET) - 1
    assert "h0001" not in {h.facts.host_id for h in planned}
    assert {h.facts for h in lab} == {f for f in evaluated if f.forest == "lab.example"} and lab


def test_the_facts_generation_moves_with_a_fact_change_only(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        before = facts_generation(session)
    later = NOW + timedelta(minutes=5)
    with sessions.begin() as session:
        apply_reports(session, [IncomingReport(FLEET[5], later, 2, "test", later)])  # a heartbeat
    with sessions() as session:
        assert facts_generation(session) == before
    changed = replace(FLEET[5], hostname="renamed.example")
    with sessions.begin() as session:
        apply_reports(session, [IncomingReport(changed, later, 3, "test", later)])
    with sessions() as session:
        assert facts_generation(session) > before
