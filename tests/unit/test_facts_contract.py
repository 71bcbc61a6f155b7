"""The host facts contract (design.md, contract 1) as the agent reads it from a facts file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rmsfleet.contract.facts import FactsFileError, Version, load_facts_file

GOOD: dict[str, Any] = {
    "host_id": "ams-rms-01",
    "hostname": "ams-rms-01.corp.example",
    "forest": "corp.example",
    "server": {
        "version": "SP1",
        "cluster": "https://rms.corp.example",
        "cluster_kind": "root-certification",
        "root_cluster": None,
        "enrollment": "offline",
    },
    "client": {"version": "SP2", "activation": "self", "cluster": "https://rms.corp.example"},
}


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(document))
    return path


def test_the_design_example_is_accepted(tmp_path: Path) -> None:
    facts = load_facts_file(write(tmp_path, GOOD))
    assert facts.server is not None and facts.server.version is Version.SP1
    assert facts.client is not None and facts.client.version is Version.SP2


def test_a_client_only_host_is_accepted(tmp_path: Path) -> None:
    facts = load_facts_file(write(tmp_path, {**GOOD, "server": None}))
    assert facts.server is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {**GOOD, "server": None, "client": None},
            "server: expected a host reports a server part, a client part or both",
        ),
        ({k: v for k, v in GOOD.items() if k != "forest"}, "forest: expected a string (the field is missing)"),
        ({**GOOD, "host_id": ""}, "host_id: expected a non-empty string"),
        ({**GOOD, "host_id": "x" * 300}, "host_id: expected at most 255 characters, got 300"),
        (
            {**GOOD, "server": {**GOOD["server"], "version": "SP3"}},
            "server.version: expected one of 'RTM', 'SP1', 'SP2', 'UNKNOWN', 'BUILTIN', got 'SP3'",
        ),
        (
            {**GOOD, "client": {**GOOD["client"], "activation": "auto"}},
            "client.activation: expected one of 'self', 'internet', 'none', 'unknown', got 'auto'",
        ),
        # D6: a licensing cluster is subenrolled under a root certification cluster.
        (
            {**GOOD, "server": {**GOOD["server"], "cluster_kind": "licensing"}},
            "server.root_cluster: expected a licensing cluster names its root",
        ),
        (
            {**GOOD, "server": {**GOOD["server"], "root_cluster": "https://other"}},
            "server.root_cluster: expected only a licensing cluster has a root",
        ),
        ([1, 2], "(top level): expected a JSON object"),
    ],
)
def test_a_bad_facts_file_names_the_file_and_the_field(tmp_path: Path, document: object, message: str) -> None:
    path = write(tmp_path, document)
    with pytest.raises(FactsFileError) as raised:
        load_facts_file(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "facts.json"
    path.write_text('{\n  "host_id": "a",\n  oops\n}')
    with pytest.raises(FactsFileError, match=rf"^{path}:3:\d+: not valid JSON"):
        load_facts_file(path)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FactsFileError, match="cannot read"):
        load_facts_file(tmp_path / "absent.json")
