"""The admin API's edge: every request field bounded and checked (INVALID_ARGUMENT naming the
field and the bound), the token format, and the certificate-roles file (a bad line names the
file and the line)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from rmsfleet.collector import admin_convert as ac
from rmsfleet.collector.certificate_roles import CertificateRolesError, load_certificate_roles
from rmsfleet.collector.identity import CertificateNames
from rmsfleet.collector.query_convert import BadRequest
from rmsfleet.collector.tokens import Role, hash_token, lookup_id_of, matches, new_token
from rmsfleet.v1 import admin_pb2

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GOOD = {"policy": "stale-agent", "subject_kind": "host", "subject": "ws1", "reason": "kiosk"}


def exemption(**fields: object) -> admin_pb2.AddExemptionRequest:
    return admin_pb2.AddExemptionRequest(**{**GOOD, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (exemption(policy="nope"), "policy: expected a known policy"),
        (exemption(subject_kind="galaxy"), "subject_kind: expected one of cluster, host, forest"),
        (exemption(subject=""), "subject: expected a non-empty value"),
        (exemption(subject="h" * 256), "subject: expected at most 255 characters, got 256"),
        (exemption(subject_kind="cluster", subject="u" * 2049), "subject: expected at most 2048 characters"),
        (exemption(reason="r" * 1001), "reason: expected at most 1000 characters, got 1001"),
        (exemption(reason="a\x1b[2Jb"), "reason: expected no control characters or format characters"),
        (exemption(subject="ws\u202e1"), "subject: expected no control characters or format characters"),
        (exemption(expires_at=Timestamp(seconds=1)), "expires_at: expected a time in the future"),
        (exemption(expires_at=Timestamp(seconds=2**40)), "expires_at: expected a time from year 1 to 9999"),
    ],
)
def test_an_exemption_out_of_bounds_names_the_field(request_: admin_pb2.AddExemptionRequest, expected: str) -> None:
    with pytest.raises(BadRequest) as refused:
        ac.exemption_of(request_, NOW)
    assert str(refused.value).startswith(expected), str(refused.value)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"name": ""}, "name: expected 1 to 64 letters"),
        ({"name": "a" * 65}, "name: expected 1 to 64 letters"),
        ({"name": "-lead"}, "name: expected 1 to 64 letters"),
        ({"name": "new\nline"}, "name: expected 1 to 64 letters"),
        ({"role": "owner"}, "role: expected one of reader, admin, scanner, got owner"),
        ({"expires_in": Duration(seconds=0, nanos=5)}, "expires_in: expected a duration from 1s to 366d"),
        ({"expires_in": Duration(seconds=367 * 86400)}, "expires_in: expected a duration from 1s to 366d"),
        ({"expires_in": Duration(seconds=-1)}, "expires_in: expected a duration from 1s"),
    ],
)
def test_a_token_request_out_of_bounds_names_the_field(fields: dict[str, object], expected: str) -> None:
    request = admin_pb2.CreateTokenRequest(**{"name": "ci", "role": "reader", **fields})  # type: ignore[arg-type]
    with pytest.raises(BadRequest) as refused:
        ac.token_wanted_of(request)
    assert str(refused.value).startswith(expected), str(refused.value)


def test_an_allowance_is_bounded() -> None:
    host, lasting = ac.allowance_of(admin_pb2.AllowReenrollRequest(host_id="ws1"))
    assert (host, lasting) == ("ws1", timedelta(hours=1))
    with pytest.raises(BadRequest, match="duration: expected a duration from 1s to 30d"):
        ac.allowance_of(admin_pb2.AllowReenrollRequest(host_id="ws1", duration=Duration(seconds=31 * 86400)))
    with pytest.raises(BadRequest, match="host_id: expected an id without surrounding spaces"):
        ac.allowance_of(admin_pb2.AllowReenrollRequest(host_id=" ws1"))


def test_a_token_is_random_its_hash_is_sha256_and_a_near_miss_does_not_match() -> None:
    first, second = new_token(), new_token()
    assert first.token != second.token and first.lookup_id != second.lookup_id
    assert lookup_id_of(first.token) == first.lookup_id and len(first.token) <= 128
    assert first.secret_hash == hash_token(first.token) and first.secret_hash.startswith("sha256:")
    assert matches(first.secret_hash, first.token)
    assert not matches(first.secret_hash, first.token[:-1] + ("A" if first.token[-1] != "A" else "B"))
    assert lookup_id_of("rmsfleet_" + "0" * 16 + "_short") is None
    assert lookup_id_of("x" * 10_000) is None


def test_the_certificate_roles_file(tmp_path: Path) -> None:
    path = tmp_path / "roles"
    path.write_text("# comment\n\nOps.Example. admin\nviewer.example reader  # trailing\n")
    roles = load_certificate_roles(path)
    assert roles.match(CertificateNames(None, ("ops.example",))) == ("Ops.Example.", Role.ADMIN)
    assert roles.match(CertificateNames("viewer.example", ())) == ("viewer.example", Role.READER)
    assert roles.match(CertificateNames("*.example", ("*.example",))) is None
    assert roles.match(CertificateNames("other", ())) is None
    for text, line, reason in [
        ("a reader extra\n", 1, "expected `NAME ROLE`, got 3 words"),
        ("ok reader\nb owner\n", 2, "expected one of reader, admin, scanner"),
        ("ok reader\nOK admin\n", 2, "OK is named twice"),
        ("ok reader\n\n-bad reader\n", 3, "expected 1 to 64 letters"),
    ]:
        path.write_text(text)
        with pytest.raises(CertificateRolesError) as refused:
            load_certificate_roles(path)
        assert str(refused.value).startswith(f"--certificate-roles {path}:{line}: {reason}"), str(refused.value)
    with pytest.raises(CertificateRolesError, match="cannot read"):
        load_certificate_roles(tmp_path / "missing")
