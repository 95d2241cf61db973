"""The inventory's state file: written atomically, read back whole, bad files named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forwarder.aws import inventory
from forwarder.aws.inventory import EndpointService
from tests.unit.aws import builders as b


def full() -> inventory.Inventory:
    return b.inventory(
        b.interface("vpce-0s3", dns_names=("vpce-0s3-x.s3.ap-northeast-1.vpce.amazonaws.com",),
                    dns_record_ip_type="ipv4", private_dns_only_for_inbound=True),
        b.gateway(), b.inbound(), b.prefix_list(),
        services=(EndpointService(b.S3, b.REGION, "amazon", ("s3.ap-northeast-1.amazonaws.com",
                                                             "*.s3.ap-northeast-1.amazonaws.com")),))


def test_the_state_file_holds_everything_found(tmp_path: Path) -> None:
    path = tmp_path / "aws-inventory.json"
    inv = full()
    inventory.write_state(str(path), inv)
    back = inventory.read_state(str(path))
    assert back == inv and back.source == "state_file"
    assert back.same_contents(inv)
    assert [p.name for p in tmp_path.iterdir()] == ["aws-inventory.json"]  # no temp file left


def test_writing_replaces_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "aws-inventory.json"
    inventory.write_state(str(path), full())
    smaller = b.inventory(b.gateway())
    inventory.write_state(str(path), smaller)
    assert inventory.read_state(str(path)) == smaller


def test_a_directory_that_cannot_be_written_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        inventory.write_state(str(tmp_path / "missing" / "inv.json"), full())


@pytest.mark.parametrize(("content", "reason"), [
    (None, "cannot read"),
    ("{", "not a valid inventory"),
    ('{"format": 99}', "not an inventory of format 1"),
    ('{"format": 1, "fetched_at": 1}', "not a valid inventory: KeyError"),
])
def test_a_bad_state_file_is_an_error_naming_it(tmp_path: Path, content: str | None,
                                                reason: str) -> None:
    path = tmp_path / "aws-inventory.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(inventory.StateFileError, match=reason) as e:
        inventory.read_state(str(path))
    assert str(path) in str(e.value)


def test_the_json_names_its_format() -> None:
    assert json.loads(inventory.to_json(full()))["format"] == inventory.FORMAT


def test_a_state_file_from_before_prefix_lists_still_reads(tmp_path: Path) -> None:
    """Prefix lists came later: a state file without them is the same inventory, none."""
    path = tmp_path / "aws-inventory.json"
    inventory.write_state(str(path), full())
    data = json.loads(path.read_text())
    data.pop("prefix_lists")
    path.write_text(json.dumps(data))
    back = inventory.read_state(str(path))
    assert back.prefix_lists == () and back.gateway == full().gateway
