"""Where the scanner's account comes from, and that its secrets never show in a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmsfleet.agent.scanner.credentials import CredentialsError, load_credentials

SECRET = "S3cr3t-never-shown"


def credentials_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "scan.credentials"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_private_file_gives_the_account(tmp_path: Path) -> None:
    path = credentials_file(tmp_path, f'username = "CORP\\\\rmsscan"\npassword = "{SECRET}"\n')
    credentials, source = load_credentials(path, {})
    assert (credentials.username, credentials.domain, credentials.password) == ("rmsscan", "CORP", SECRET)
    assert source == f"credentials file {path}"
    assert SECRET not in repr(credentials) and SECRET not in str(credentials)


def test_a_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = credentials_file(tmp_path, f'username = "u"\npassword = "{SECRET}"\n', mode=0o644)
    with pytest.raises(CredentialsError, match=r"readable by others than its owner \(mode 0644\): run `chmod 600"):
        load_credentials(path, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f'username = "u"\npasword = "{SECRET}"\n', "pasword: unknown key"),
        ('username = "u"\n', "password (or nthash): missing"),
        (f'password = "{SECRET}"\n', "username: missing"),
        (f'username = "u"\npassword = "{SECRET}\n', "not valid TOML"),
        ('username = "u"\nnthash = "xyz"\n', "nthash: expected 32 hexadecimal digits"),
    ],
)
def test_a_bad_file_is_one_line_without_the_secret(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CredentialsError) as raised:
        load_credentials(credentials_file(tmp_path, text), {})
    assert message in str(raised.value)
    assert SECRET not in str(raised.value)


def test_the_environment_and_the_ticket_cache() -> None:
    credentials, source = load_credentials(
        None,
        {"RMSFLEET_SCAN_USERNAME": "rmsscan@corp.example", "RMSFLEET_SCAN_PASSWORD": SECRET, "KRB5CCNAME": "x"},
    )
    assert (credentials.username, credentials.domain, credentials.use_kerberos, source) == (
        "rmsscan",
        "corp.example",
        False,
        "environment",
    )
    kerberos, source = load_credentials(None, {"KRB5CCNAME": "FILE:/tmp/krb5cc_1000"})
    assert kerberos.use_kerberos and kerberos.password == "" and "ticket cache" in source


def test_no_credentials_says_where_they_may_come_from() -> None:
    with pytest.raises(CredentialsError, match=r"--credentials-file FILE .*RMSFLEET_SCAN_PASSWORD.*KRB5CCNAME"):
        load_credentials(None, {})
    with pytest.raises(CredentialsError, match="RMSFLEET_SCAN_USERNAME is set but no password"):
        load_credentials(None, {"RMSFLEET_SCAN_USERNAME": "u"})
