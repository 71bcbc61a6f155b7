"""The enrollment token option (`[enroll] token_file`, `--enroll-token-file`,
RMSFLEET_ENROLL_TOKEN_FILE): where it comes from, what a bad file says (naming the file, never
the token), that it cannot stand beside the secret, and that nothing prints the token."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rmsfleet.agent.config import ConfigError, add_arguments, flag_values, load_config, render_effective
from rmsfleet.agent.enrollment import EnrollFileError, Kind, read_credential
from rmsfleet.agent.scanner.settings import ScanFlags, load_scan_config

TOKEN = "rmsfleet_0123456789abcdef_" + "A" * 43


def token_file(tmp_path: Path, text: str = TOKEN + "\n") -> Path:
    path = tmp_path / "scanner.token"
    path.write_text(text)
    return path


def test_the_token_file_comes_from_the_file_the_variable_or_the_flag(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text('[enroll]\ntoken_file = "scanner.token"\n')
    from_file = load_config({}, {}, config_file)
    assert from_file.enroll_token_file == tmp_path / "scanner.token", "relative to the file"
    assert from_file.source_of("enroll_token_file") == f"{config_file}:2"
    from_env = load_config({}, {"RMSFLEET_ENROLL_TOKEN_FILE": "/etc/rmsfleet/env.token"}, config_file)
    assert from_env.enroll_token_file == Path("/etc/rmsfleet/env.token")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--enroll-token-file", "/etc/rmsfleet/flag.token"])
    from_flag = load_config(flag_values(args), {"RMSFLEET_ENROLL_TOKEN_FILE": "/x"}, config_file)
    assert from_flag.enroll_token_file == Path("/etc/rmsfleet/flag.token")
    assert from_flag.enrolls and from_flag.enroll_secret_file is None


def test_a_secret_beside_a_token_is_refused_naming_where_each_came_from(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text('[enroll]\nsecret_file = "enroll.secret"\n')
    with pytest.raises(ConfigError) as refused:
        load_config({"enroll_token_file": "/etc/rmsfleet/scanner.token"}, {}, config_file)
    assert str(refused.value) == (
        f"enroll: secret_file ({config_file}:2) and token_file (flag --enroll-token-file) are both set: "
        "keep one (a scanner token needs no secret)"
    )


def test_the_scanner_reads_the_token_file_from_its_own_configuration(tmp_path: Path) -> None:
    config_file = tmp_path / "scan.toml"
    config_file.write_text('[agent]\ncollectors = ["127.0.0.1:50051"]\n\n[enroll]\ntoken_file = "/etc/scan.token"\n')
    config = load_scan_config({}, ScanFlags(), {}, config_file)
    assert config.agent.enroll_token_file == Path("/etc/scan.token")


def test_the_effective_configuration_names_the_file_and_never_reads_it(tmp_path: Path) -> None:
    path = token_file(tmp_path)
    text = render_effective(load_config({"enroll_token_file": str(path)}, {}, None))
    assert f'token_file = "{path}"  # flag --enroll-token-file; the token itself is never shown' in text
    assert TOKEN not in text


def test_a_good_token_file_gives_a_token_and_no_secret(tmp_path: Path) -> None:
    path = token_file(tmp_path, f"# made by tokens create scanner-1 --role scanner\n\n  {TOKEN}  \n")
    credential = read_credential(None, path)
    assert credential is not None and credential.kind is Kind.TOKEN
    assert (credential.token, credential.secret) == (TOKEN, "")
    assert credential.describe() == f"the enrollment token in {path}"
    assert TOKEN not in repr(credential)
    assert read_credential(None, None) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "holds no token"),
        ("# only a comment\n\n", "holds no token"),
        (f"{TOKEN[:20]} {TOKEN[20:]}\n", "expected one token (as `tokens create` printed it) on its first line"),
        (f"{TOKEN}é\n", "expected one token"),
        (TOKEN * 4 + "\n", "expected one token"),
    ],
)
def test_a_bad_token_file_is_one_line_naming_it_and_not_its_content(tmp_path: Path, text: str, says: str) -> None:
    path = token_file(tmp_path, text)
    with pytest.raises(EnrollFileError) as bad:
        read_credential(None, path)
    message = str(bad.value)
    assert message.startswith(f"enroll token_file {path}: ") and says in message
    assert "\n" not in message and TOKEN[-20:] not in message


def test_an_unreadable_token_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.token"
    with pytest.raises(EnrollFileError) as bad:
        read_credential(None, missing)
    assert str(bad.value) == f"enroll token_file {missing}: cannot read: No such file or directory"
