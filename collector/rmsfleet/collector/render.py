"""What the query commands print: aligned tables for people, JSON for scripts, from the plain
dicts of query_convert (the JSON contracts). Pure: text in, text out.

Every cell of a table goes through `printable`: the data comes from reports and from operators
(host ids, URLs, exemption reasons), and a control character in it must not move the cursor,
recolour or clear a terminal, or forge a line of the table. JSON escapes them by itself."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def printable(text: str) -> str:
    """`text` with every character Python does not call printable (C0 and C1 controls, DEL,
    bidirectional overrides, separators other than the space) written as a Python escape
    (`\\x1b`, `\\u202e`), so what is shown is what is stored."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ord(ch)) for ch in text)


_SHORT = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape(code: int) -> str:
    if code in _SHORT:
        return _SHORT[code]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = [[printable(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)
    return "\n".join(lines)


def as_json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def _list_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return render_table(headers, rows) + "\n" + ("(none)\n" if not rows else "")


# --- how current an answer is -------------------------------------------------------------------


def evaluation_line(mark: Mapping[str, Any]) -> str:
    """One line saying how far evaluation had got (query_convert.evaluation_dict): printed under
    a hosts or violations table, or on stderr with --json."""
    behind = mark["reports_committed"] - mark["reports_evaluated"]
    state = "up to date" if behind == 0 else f"{behind} not yet; --wait-for-evaluation waits for them"
    return (
        f"evaluated: {mark['reports_evaluated']} of the {mark['reports_committed']} reports this collector "
        f"committed ({state}); last evaluation pass {mark['evaluated_at'] or 'none yet'}\n"
    )


# --- hosts ---------------------------------------------------------------------------------------


def _version(part: Mapping[str, Any] | None) -> str:
    return "-" if part is None else str(part["version"])


HOST_HEADERS = ("host", "forest", "server", "cluster", "client", "activation", "last_seen", "stale")


def _host_row(h: Mapping[str, Any]) -> list[str]:
    return [
        h["host_id"],
        h["forest"],
        _version(h["server"]),
        (h["server"] or h["client"] or {}).get("cluster") or "-",
        _version(h["client"]),
        (h["client"] or {}).get("activation") or "-",
        h["last_seen"] or "",
        "yes" if h["stale"] else "",
    ]


def hosts_table(hosts: Sequence[Mapping[str, Any]]) -> str:
    return render_table(HOST_HEADERS, [_host_row(h) for h in hosts]) + f"\n{len(hosts)} hosts\n"


def host_detail_table(detail: Mapping[str, Any]) -> str:
    """One host (query_convert.host_detail_dict) and its history of fact changes."""
    history = [
        [h["changed_at"] or "", _version(h["server"]), (h["server"] or {}).get("cluster") or "", _version(h["client"])]
        for h in detail["history"]
    ]
    return (
        render_table(HOST_HEADERS, [_host_row(detail["host"])])
        + "\n\nHISTORY\n"
        + render_table(["changed_at", "server", "cluster", "client"], history)
        + "\n"
    )


# --- violations, clusters, exemptions -------------------------------------------------------------


def violations_table(items: Sequence[Mapping[str, Any]], with_resolved: bool) -> str:
    headers = ["policy", "severity", "subject_kind", "subject", "since", "detail"]
    if with_resolved:
        headers.insert(5, "resolved_at")
    return _list_table(headers, [[str(v[h] or "") for h in headers] for v in items])


def _counts(mapping: Mapping[str, int]) -> str:
    return " ".join(f"{v}:{n}" for v, n in mapping.items()) or "-"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def clusters_table(items: Sequence[Mapping[str, Any]]) -> str:
    headers = [
        "cluster",
        "kind",
        "root",
        "forest",
        "servers",
        "clients",
        "offline_enroll",
        "self_activating",
        "lockbox",
        "sql2005",
    ]
    rows = [
        [
            c["url"],
            c["kind"] or "",
            c["root_cluster"] or "-",
            c["forest"],
            _counts(c["server_versions"]),
            _counts(c["client_versions"]),
            _yes(c["offline_enrollment"]),
            c["self_activating_clients"],
            _yes(c["server_lockbox"]),
            _yes(c["sql_server_2005_by_default"]),
        ]
        for c in items
    ]
    return _list_table(headers, rows)


def exemptions_table(items: Sequence[Mapping[str, Any]]) -> str:
    headers = ["id", "policy", "subject_kind", "subject", "reason", "expires_at"]
    rows = [[str(e[h] or "never") if h == "expires_at" else str(e[h]) for h in headers] for e in items]
    return _list_table(headers, rows)


# --- the plan ------------------------------------------------------------------------------------


def plan_text(plan: Mapping[str, Any]) -> str:
    """The waves as a table, then each wave's D4 checklist and the hosts left out, with why."""
    rows = [
        [
            str(w["wave"]),
            s["forest"],
            s["cluster"] or "-",
            s["role"],
            f"{s['from']} -> {s['to']}",
            str(len(s["hosts"])),
            ", ".join(s["hosts"]),
        ]
        for w in plan["waves"]
        for s in w["steps"]
    ]
    out = [render_table(["wave", "forest", "cluster", "role", "upgrade", "count", "hosts"], rows) + "\n"]
    if not rows:
        out.append("(nothing to upgrade: every planned host runs SP2)\n")
    for w in plan["waves"]:
        if w["checklist"]:
            out.append(f"\nBefore wave {w['wave']} (D4):\n")
            out.extend(f"  [{printable(c['cluster'])}] {printable(c['action'])}\n" for c in w["checklist"])
    if plan["unplanned"]:
        out.append("\nNot planned:\n")
        out.extend(
            printable(f"  {u['host_id']} ({u['role']} {u['version']}): {u['reason']}") + "\n" for u in plan["unplanned"]
        )
    return "".join(out)


def tokens_table(items: Sequence[Mapping[str, Any]]) -> str:
    headers = ("name", "role", "created_at", "expires_at", "revoked_at", "created_by")
    rows = [[str(t.get(h) or "-") for h in headers] for t in items]
    return _list_table(headers, rows)


def audit_table(items: Sequence[Mapping[str, Any]]) -> str:
    headers = ("at", "actor", "action", "target", "peer", "outcome", "status", "reason")
    rows = [[str(e.get(h) or "-") for h in headers] for e in items]
    return _list_table(headers, rows)
