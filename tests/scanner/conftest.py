"""Fixtures for fake Windows hosts (see fake_hosts.py): `fake_host(FakeWindowsHost(...))` starts one
for the test and stops it afterwards; `samba_tools` and `pe_cache` are shared by the session."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .fake_hosts import FakeWindowsHost, RunningFakeHost, running_fake_host
from .pe_fixture import PACKAGE, WINDRES, tools_available
from .samba import SambaTools, require_samba

StartHost = Callable[[FakeWindowsHost], RunningFakeHost]


@pytest.fixture(scope="session")
def samba_tools() -> SambaTools:
    return require_samba()


@pytest.fixture(scope="session")
def pe_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not tools_available():
        from conftest import skip_or_fail

        skip_or_fail(f"`{WINDRES}` not found on PATH (install Debian's `{PACKAGE}` package)")
    return tmp_path_factory.mktemp("pe-cache")


@pytest.fixture
def fake_host(samba_tools: SambaTools, pe_cache: Path) -> Iterator[StartHost]:
    with contextlib.ExitStack() as stack:

        def start(host: FakeWindowsHost) -> RunningFakeHost:
            return stack.enter_context(running_fake_host(host, samba_tools, pe_cache))

        yield start
