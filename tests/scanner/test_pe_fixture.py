"""The PE fixtures carry real version resources: pefile (what the scanner uses) reads back the
versions the fixtures write, including every [MS-RMPRS] server assembly version."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmsfleet.agent.scanner.pe_version import version_from_pe

from .fake_hosts import SERVER_RTM, SERVER_SP1, SERVER_SP2, WINDOWS_7, WINDOWS_2003, WINDOWS_XP
from .pe_fixture import build_version_dll, main, parse_version


@pytest.mark.parametrize(
    "version", [SERVER_RTM, SERVER_SP1, SERVER_SP2, WINDOWS_XP, WINDOWS_2003, WINDOWS_7, (65535, 0, 1, 65535)]
)
def test_pefile_reads_back_the_version_written(
    tmp_path: Path, pe_cache: Path, version: tuple[int, int, int, int]
) -> None:
    path = build_version_dll(tmp_path / "Plugin.DirectoryServices.dll", version, cache_dir=pe_cache)
    data = path.read_bytes()
    assert data[:2] == b"MZ"
    assert version_from_pe(data) == version


def test_the_script_writes_a_file(tmp_path: Path, pe_cache: Path) -> None:
    out = tmp_path / "msdrm.dll"
    assert main([str(out), "5.2.3790.134", "Windows Rights Management Client"]) == 0
    assert version_from_pe(out.read_bytes()) == (5, 2, 3790, 134)


@pytest.mark.parametrize("text", ["5.2.3790", "5.2.3790.70000", "a.b.c.d"])
def test_a_bad_version_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="four numbers"):
        parse_version(text)
    assert main(["/nonexistent/x.dll", text]) == 1


def test_bytes_that_are_no_pe_image_have_no_version() -> None:
    assert version_from_pe(b"") is None
    assert version_from_pe(b"MZ" + b"\0" * 200) is None
    assert version_from_pe(b"plain text, not an executable") is None
