"""The host facts contract (design.md, contract 1) as the agent reads it from a facts file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rmsfleet.contract.facts import (
    Activation,
    ClientFacts,
    FactsFileError,
    HostFacts,
    InvalidFacts,
    Version,
    facts_from_json,
    facts_to_json,
    load_facts_file,
)
from rmsfleet.contract.wire import facts_from_pb, facts_to_pb
from rmsfleet.v1 import facts_pb2

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
            "server.version: expected one of 'RTM', 'SP1', 'SP2', 'UNKNOWN', got 'SP3'",
        ),
        (
            {**GOOD, "client": {**GOOD["client"], "activation": "auto"}},
            "client.activation: expected one of 'self', 'internet', 'none', 'unknown', got 'auto'",
        ),
        # D15: the client built into Windows is no server version.
        (
            {**GOOD, "server": {**GOOD["server"], "version": "BUILTIN"}},
            "server.version: expected one of 'RTM', 'SP1', 'SP2', 'UNKNOWN', got 'BUILTIN'",
        ),
        # D17: a count of user profiles, bounded.
        (
            {**GOOD, "client": {**GOOD["client"], "activated_users": -1}},
            "client.activated_users: expected a count from 0 to 100000, got -1",
        ),
        (
            {**GOOD, "client": {**GOOD["client"], "activated_users": True}},
            "client.activated_users: expected a whole number or null",
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


def test_d15_d17_new_client_facts_survive_json_and_the_wire() -> None:
    for client in (
        ClientFacts(Version.BUILTIN, Activation.UNKNOWN, "https://rms.corp.example"),
        ClientFacts(Version.SP2, Activation.SELF, None, activated_users=2),
        ClientFacts(Version.RTM, Activation.NONE, None, activated_users=0),
    ):
        facts = HostFacts("h1", "h1.corp.example", "corp.example", None, client)
        assert facts_from_json(facts_to_json(facts)) == facts
        assert facts_from_pb(facts_to_pb(facts)) == facts


def test_the_wire_refuses_a_server_built_into_windows_naming_the_field() -> None:
    message = facts_pb2.HostFacts(host_id="h1", hostname="h1", forest="corp.example")
    message.server.CopyFrom(
        facts_pb2.ServerFacts(
            version=facts_pb2.VERSION_BUILTIN,
            cluster="https://rms.corp.example",
            cluster_kind=facts_pb2.CLUSTER_KIND_ROOT_CERTIFICATION,
            enrollment=facts_pb2.ENROLLMENT_OFFLINE,
        )
    )
    with pytest.raises(InvalidFacts) as raised:
        facts_from_pb(message)
    assert raised.value.field == "server.version"
