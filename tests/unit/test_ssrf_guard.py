"""Label Studio's SSRF check kept on with only the backend's network exempt
(takemeter.stack.banned_subnets_except), as the compose file and the test stacks run it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml

from takemeter import stack

ROOT = Path(__file__).resolve().parents[2]


def banned(address: str, subnets: list[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(net) for net in subnets)


def test_only_the_backend_network_is_cut_out_of_the_reserved_ranges() -> None:
    subnets = stack.banned_subnets_except(["172.30.64.0/24"])
    assert not banned("172.30.64.7", subnets)  # a container of the compose network
    for address in ("169.254.169.254", "172.30.65.1", "172.16.0.1", "10.0.0.1", "127.0.0.1"):
        assert banned(address, subnets), address
    assert banned("::1", subnets) and not banned("93.184.216.34", subnets)
    # Nothing else lost: the pieces of 172.16.0.0/12 are all of it but the /24.
    private = ipaddress.ip_network("172.16.0.0/12")
    pieces = [ipaddress.ip_network(n) for n in subnets]
    inside = [p for p in pieces if p.version == 4 and p.subnet_of(private)]
    assert sum(p.num_addresses for p in inside) == private.num_addresses - 256
    assert len(subnets) == len(stack.RESERVED_SUBNETS) - 1 + len(inside)


def test_the_compose_file_exempts_exactly_its_pinned_network() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    (pinned,) = compose["networks"]["default"]["ipam"]["config"]
    env = compose["services"]["label-studio"]["environment"]
    assert env["USE_DEFAULT_BANNED_SUBNETS"] == "false"
    assert env["USER_ADDITIONAL_BANNED_SUBNETS"] == ",".join(
        stack.banned_subnets_except([pinned["subnet"]])
    )
    # The broad switches stay at Label Studio's defaults (on).
    assert "SSRF_PROTECTION_ENABLED" not in env and "ML_BLOCK_LOCAL_IP" not in env
