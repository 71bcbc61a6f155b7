"""The collector's enrollment secret file: several secrets, comments, rotation by re-reading the
file when it changes, and the last good secrets kept when it cannot be read."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from rmsfleet.collector.enrollment import SecretFile, file_is_private


def bump(path: Path, text: str) -> None:
    """Rewrite the file and move its mtime forward, so the change shows on coarse clocks too."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


def test_any_listed_secret_is_accepted_and_comments_are_not_secrets(tmp_path: Path) -> None:
    path = tmp_path / "enroll.secrets"
    path.write_text("# rotated 2026-11\n\n  current-secret  \nprevious-secret\n")
    secrets = SecretFile(path)
    assert secrets.accepts("current-secret")
    assert secrets.accepts("previous-secret\n")
    assert not secrets.accepts("# rotated 2026-11")
    assert not secrets.accepts("")
    assert not secrets.accepts("current")
    assert not secrets.accepts("x" * 5000)


def test_a_changed_file_is_read_again_so_secrets_rotate_without_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "enroll.secrets"
    path.write_text("old\n")
    secrets = SecretFile(path)
    assert secrets.accepts("old") and not secrets.accepts("new")
    bump(path, "old\nnew\n")
    assert secrets.accepts("old") and secrets.accepts("new")
    bump(path, "new\n")
    assert not secrets.accepts("old") and secrets.accepts("new")
    with caplog.at_level(logging.ERROR):
        path.unlink()
        # Unreadable: the secrets read last stay in force, and the log says so.
        assert secrets.accepts("new")
    assert "keeping the 1 secret(s) read before" in caplog.text


def test_an_empty_file_refuses_every_enrollment(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "enroll.secrets"
    path.write_text("# enrollment closed\n")
    with caplog.at_level(logging.WARNING):
        secrets = SecretFile(path)
    assert not secrets.accepts("anything")
    assert "lists no secret" in caplog.text


def test_a_missing_file_is_an_error_at_start(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        SecretFile(tmp_path / "absent")


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_file_readable_by_others_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "enroll.secrets"
    path.write_text("s\n")
    path.chmod(0o644)
    assert not file_is_private(path)
    path.chmod(0o600)
    assert file_is_private(path)
