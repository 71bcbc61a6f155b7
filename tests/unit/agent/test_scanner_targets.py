"""The scanner's targets: a file or arguments, one host each, never a network sweep, errors that
name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmsfleet.agent.scanner.targets import (
    ListedTarget,
    TargetError,
    check_unique,
    parse_target_arguments,
    read_targets_file,
)


def test_a_targets_file_gives_names_addresses_ports_and_groups(tmp_path: Path) -> None:
    path = tmp_path / "targets.txt"
    path.write_text(
        "# the Amsterdam cluster\n"
        "rms01.corp.example\n"
        "\n"
        "rms02.corp.example   10.0.0.12          group=amsterdam   # licensing\n"
        "xp-desk-07           10.0.1.7:4445      group=desktops\n"
        "srv03:1445\n"
        "v6host               [::1]:4446\n"
    )
    targets = read_targets_file(path)
    assert [(t.name, t.address, t.port, t.group) for t in targets] == [
        ("rms01.corp.example", None, 445, None),
        ("rms02.corp.example", "10.0.0.12", 445, "amsterdam"),
        ("xp-desk-07", "10.0.1.7", 4445, "desktops"),
        ("srv03", None, 1445, None),
        ("v6host", "::1", 4446, None),
    ]
    assert targets[1].where == f"{path}:4"
    assert targets[2].connect_address == "10.0.1.7"
    assert targets[4].describe() == "v6host ([::1]:4446)"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("10.0.0.0/24", "'10.0.0.0/24' is a network range"),
        ("rms01 10.0.0.0/24", "is a network range"),
        ("10.0.0.1-20", "is an address range"),
        ("*.corp.example", "is a wildcard"),
        ("10.0.0.256", "is not a valid IP address"),
        ("bad_name!", "is neither a host name"),
        ("rms01 10.0.0.1 10.0.0.2", "3 fields where at most two"),
        ("rms01 owner=bob", "'owner=bob': unknown setting"),
        ("rms01:99999", "port '99999': expected a number from 1 to 65535"),
        ("rms01:445 10.0.0.1:446", "two different ports"),
        ("rms01 group=a group=b", "group given twice"),
        ("group=only", "no host name"),
    ],
)
def test_a_bad_line_is_refused_with_its_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "targets.txt"
    path.write_text(f"# header\nok.corp.example\n{line}\n")
    with pytest.raises(TargetError) as raised:
        read_targets_file(path)
    assert str(raised.value).startswith(f"{path}:3: ")
    assert message in str(raised.value)


def test_arguments_use_the_line_form_and_name_the_argument() -> None:
    targets = parse_target_arguments(["rms01", "rms02 127.0.0.1:4445 group=g"])
    assert targets[1] == ListedTarget("rms02", "127.0.0.1", 4445, "g", "argument 2 ('rms02 127.0.0.1:4445 group=g')")
    with pytest.raises(TargetError, match=r"argument 1 \('192.168.0.0/16'\): .*network range"):
        parse_target_arguments(["192.168.0.0/16"])


def test_a_host_listed_twice_is_refused_naming_both_places(tmp_path: Path) -> None:
    path = tmp_path / "targets.txt"
    path.write_text("rms01\nRMS01 10.0.0.1\n")
    with pytest.raises(TargetError, match=rf"{path}:2: RMS01 is already listed at {path}:1"):
        check_unique(read_targets_file(path))


def test_a_missing_targets_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="no such targets file"):
        read_targets_file(tmp_path / "absent.txt")
