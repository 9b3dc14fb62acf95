"""Which remote-control messages are kept as revocations (`celery_bridge.revoking`)."""

from __future__ import annotations

import json

import pytest

from celery_bridge.options import BridgeOptions
from celery_bridge.revoking import revoked_ids


def _command(method: str, arguments: object, destination: object = None) -> str:
    return json.dumps({"method": method, "arguments": arguments, "destination": destination})


def test_a_revoke_to_every_worker_gives_its_ids() -> None:
    assert revoked_ids(_command("revoke", {"task_id": "a", "terminate": False})) == (["a"], False)
    body = _command("revoke", {"task_id": ["a", "b"], "terminate": True, "signal": "SIGTERM"})
    assert revoked_ids(body.encode()) == (["a", "b"], True)


@pytest.mark.parametrize(
    "body",
    [
        _command("revoke", {"task_id": "a"}, destination=["w1@host"]),  # named workers only
        _command("revoke_by_stamped_headers", {"headers": {"x": "revoke"}}),
        _command("scheduled", {}),
        _command("revoke", {"task_id": 5}),
        _command("revoke", "a"),
        '{"method": "revoke", "arguments"',  # not JSON
        json.dumps({"ok": "tasks a flagged as revoked"}),  # a reply
        None,
    ],
)
def test_other_messages_give_none(body: object) -> None:
    assert revoked_ids(body) == ([], False)


def test_revoke_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="revoke_ttl"):
        BridgeOptions.from_transport_options({"revoke_ttl": 0})
    assert BridgeOptions.from_transport_options({}).revoke_topic == "kafka-jobs.revoked"
