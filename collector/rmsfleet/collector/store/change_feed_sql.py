"""The evaluation change feed (table `evaluation_feed`, migration 0005): what every replica's
writer changed, for the replica that evaluates.

Written with the reports (one multi-row insert per batch, in the batch's transaction) and
consumed by deleting the oldest rows in the evaluating transaction. Deleting is the cursor: the
ids come from a sequence, and two replicas' transactions commit in any order, so a row with a
lower id can become visible after a higher one was consumed. A high-water mark over the ids
would skip it; the rows left in the table are exactly the changes no committed pass covered,
whatever order they committed in. A pass that fails or a process that dies before its commit
leaves its rows in place, and the next pass evaluates them again (evaluation is idempotent: it
compares the policies' findings with the stored violations)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.orm import Session

from rmsfleet.collector.store.models import ChangeFeedRow
from rmsfleet.collector.store.rows import utc

_FEED = cast(Table, ChangeFeedRow.__table__)


@dataclass(frozen=True, slots=True)
class FeedEntry:
    host_id: str
    touches_servers: bool


@dataclass(frozen=True, slots=True)
class ConsumedChanges:
    """The changes one pass took from the feed (each host once)."""

    host_ids: frozenset[str]
    servers_touched: bool
    rows: int


@dataclass(frozen=True, slots=True)
class FeedBacklog:
    """Rows no pass has covered yet (counted up to a bound) and when the oldest was written."""

    rows: int
    oldest_at: datetime | None


def record_changes(session: Session, entries: Sequence[FeedEntry], now: datetime) -> int | None:
    """Append `entries` in the caller's transaction: one statement (a multi-row insert). Returns
    the highest id written, None when there was nothing to write."""
    if not entries:
        return None
    rows = [{"host_id": e.host_id, "touches_servers": e.touches_servers, "created_at": now} for e in entries]
    ids = session.execute(insert(_FEED).returning(_FEED.c.id), rows).scalars().all()
    return int(max(ids))


def consume_changes(session: Session, limit: int) -> ConsumedChanges:
    """Take (delete and return) at most `limit` of the oldest rows, in the caller's transaction:
    they are gone once it commits and back if it rolls back. One statement."""
    oldest = select(_FEED.c.id).order_by(_FEED.c.id).limit(limit)
    taken = session.execute(
        delete(_FEED).where(_FEED.c.id.in_(oldest)).returning(_FEED.c.host_id, _FEED.c.touches_servers)
    ).all()
    return ConsumedChanges(
        host_ids=frozenset(row.host_id for row in taken),
        servers_touched=any(row.touches_servers for row in taken),
        rows=len(taken),
    )


def lowest_pending(session: Session) -> int | None:
    """The lowest id still in the feed (None: empty). Every row with a lower id that was
    committed before this read has been consumed. One index lookup."""
    lowest = session.execute(select(func.min(_FEED.c.id))).scalar()
    return None if lowest is None else int(lowest)


def feed_backlog(session: Session, count_up_to: int) -> FeedBacklog:
    """The rows waiting, counted up to `count_up_to` (a backlog past it is reported at the
    bound, so the count costs at most that many index entries), and the oldest row's time."""
    counted = select(_FEED.c.id).limit(count_up_to).subquery()
    rows = session.execute(select(func.count()).select_from(counted)).scalar() or 0
    oldest = session.execute(select(_FEED.c.created_at).order_by(_FEED.c.id).limit(1)).scalar()
    return FeedBacklog(rows=int(rows), oldest_at=None if oldest is None else utc(oldest))
