"""Bad stack config stops before any resource is registered, with an error naming the key."""

from __future__ import annotations

import copy

import pytest

from infra.config import decode_pulumi_config, parse_stack_config
from infra.engine import wire_config
from infra.errors import ConfigError
from tests.conftest import stack_config


@pytest.fixture(scope="module")
def good(layout):
    return {k.split(":", 1)[1]: v for k, v in stack_config(layout).items()}


def _errors(good, mutate) -> str:
    raw = copy.deepcopy(good)
    mutate(raw)
    # Through the same wire form the Pulumi CLI uses, so type errors look as they would live.
    wire = {k: v for k, v in wire_config({f"perfloop:{k}": v for k, v in raw.items()}).items()}
    with pytest.raises(ConfigError) as exc:
        parse_stack_config(decode_pulumi_config({k.split(":", 1)[1]: v for k, v in wire.items()}))
    return str(exc.value)


def test_example_config_is_valid(good):
    config = parse_stack_config(good)
    assert config.region == "europe-west4" and config.loosen == []


CASES = {
    "overlapping CIDRs": (
        lambda c: c["network"].__setitem__("pods_cidr", "10.40.0.0/14"),
        ["perfloop:network", "nodes_cidr", "overlaps pods_cidr", "10.40.0.0/14", "non-overlapping"],
    ),
    "unknown region": (lambda c: c.__setitem__("region", "europe-west99"), ["perfloop:region", "europe-west99", "allowed: "]),
    "bad tier": (lambda c: c["database"].__setitem__("tier", "db-f1-micro"), ["perfloop:database.tier", "db-f1-micro", "db-custom-<vCPUs>-<memory MiB>"]),
    "tier memory out of range": (lambda c: c["database"].__setitem__("tier", "db-custom-4-1024"), ["perfloop:database.tier", "0.9–6.5 GiB per vCPU"]),
    "missing required key": (lambda c: c.pop("project"), ["perfloop:project", "required key is missing for shape 'byoc'"]),
    "cell key on a tenant": (lambda c: c.update(shape="tenant", cell="cell-example"), ["perfloop:network: not allowed for shape 'tenant'; the cell owns it", "perfloop:project: not allowed"]),
    "unknown shape": (lambda c: c.__setitem__("shape", "mesh"), ["perfloop:shape", "'mesh'", "'byoc', 'cell' or 'tenant'"]),
    "wrong type": (lambda c: c["cluster"]["node_pools"]["sandbox"].__setitem__("max_nodes_per_zone", "many"), ["perfloop:cluster.node_pools.sandbox.max_nodes_per_zone", "'many'", "integer"]),
    "unknown key": (lambda c: c.__setitem__("regoin", "x"), ["perfloop:regoin", "not a known key"]),
    "typo in nested key": (lambda c: c["database"].__setitem__("tierr", "x"), ["perfloop:database.tierr", "not a known key"]),
    "public CIDR": (lambda c: c["network"].__setitem__("services_cidr", "8.8.0.0/20"), ["perfloop:network.services_cidr", "RFC 1918"]),
    "control plane not /28": (lambda c: c["network"].__setitem__("control_plane_cidr", "172.16.40.0/24"), ["control_plane_cidr", "/28"]),
    "unknown loosening": (lambda c: c.__setitem__("loosen", ["no-tls"]), ["perfloop:loosen[0]", "'no-tls'", "database-tls-without-client-certificates"]),
    "cmek key outside region": (
        lambda c: c.__setitem__("cmek_key", "projects/acme-perfloop-prod/locations/us-east1/keyRings/r/cryptoKeys/k"),
        ["cmek_key", "residency"],
    ),
    "image not by digest": (lambda c: c.__setitem__("images", {"egress-proxy": "ghcr.io/x/proxy:latest"}), ["perfloop:images", "egress-proxy", "digest"]),
    "min above max": (lambda c: c["cluster"]["node_pools"]["system"].__setitem__("min_nodes_per_zone", 9), ["perfloop:cluster.node_pools.system", "exceeds"]),
    "bad repository": (lambda c: c["workspace"]["code_host"].__setitem__("repositories", ["not a repo"]), ["perfloop:workspace.code_host.repositories", "owner/name"]),
    "authorised network too wide": (
        lambda c: c["cluster"]["master_authorized_networks"][0].__setitem__("cidr", "0.0.0.0/0"),
        ["perfloop:cluster.master_authorized_networks[0].cidr", "wider than /16"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_error_names_key_value_and_what_is_allowed(good, case):
    mutate, expected = CASES[case]
    message = _errors(good, mutate)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert "Traceback" not in message


def test_every_problem_is_reported_at_once(good):
    message = _errors(good, lambda c: (c.__setitem__("region", "mars-1"), c.pop("project")))
    assert "perfloop:region" in message and "perfloop:project" in message


def test_program_stops_before_registering_any_resource(plan_variant):
    """A bad config raises before the first registration: nothing is half-applied."""
    from infra.engine import _RecordingMonitor

    registered = []
    original = _RecordingMonitor.RegisterResource

    def spy(self, request):
        registered.append(request.type)
        return original(self, request)

    _RecordingMonitor.RegisterResource = spy
    try:
        with pytest.raises(ConfigError):
            plan_variant(lambda c: c.__setitem__("perfloop:region", "mars-1"))
    finally:
        _RecordingMonitor.RegisterResource = original
    assert registered == ["pulumi:pulumi:Stack", "pulumi:pulumi:Stack"]
