"""The dashboard's data and actions against a real broker with a known state."""

from __future__ import annotations

import base64
import re

import pytest

pytest.importorskip("flask")

from kafka_jobs.testing import unique_name, wait_until


def test_overview_health_dead_letters_and_a_confirmed_replay(known_state, dashboard) -> None:
    app, _worker, slow_topic, fast_topic, ran = known_state
    client = dashboard(app, sample_interval=0.3)
    group = app.settings.group_id

    def overview() -> dict:
        return client.get("/api/overview").get_json()

    def ready() -> bool:
        view = overview()
        found = [g for g in view["groups"] if g["name"] == group]
        dead = [d for d in view["dead_letters"] if d["topic"] == f"{fast_topic}.dlq"]
        if not (found and found[0]["workers"] and found[0]["recent_failures"] and dead):
            return False
        rows = {(p["topic"], p["partition"]): p for p in found[0]["partitions"]}
        return rows.get((fast_topic, 0), {}).get("committed") == 3  # all three settled

    assert wait_until(ready, timeout=30, interval=0.2)
    (mine,) = [g for g in overview()["groups"] if g["name"] == group]
    partitions = {(p["topic"], p["partition"]): p for p in mine["partitions"]}
    assert partitions[(slow_topic, 0)]["paused"] is True  # the long job holds it
    assert partitions[(fast_topic, 0)]["paused"] is False
    assert partitions[(fast_topic, 0)]["committed"] == 3 and partitions[(fast_topic, 0)]["lag"] == 0
    (member,) = mine["workers"]
    assert member["concurrency"] == 2 and {(p["topic"]) for p in member["partitions"]} == {
        slow_topic,
        fast_topic,
    }
    (failure,) = mine["recent_failures"]
    assert failure["message"] == "card declined for 13" and "ValueError" in failure["traceback"]
    assert client.get("/health").status_code == 200

    page = client.get("/").get_data(as_text=True)
    assert group in page and slow_topic in page and "<svg" in page

    dlq = f"{fast_topic}.dlq"
    listing = client.get(f"/dead-letters/{dlq}").get_data(as_text=True)
    assert "card declined for 13" in listing and 'value="0:0"' in listing
    letter = client.get(f"/dead-letters/{dlq}/0/0").get_data(as_text=True)
    assert "Traceback" in letter and "card declined for 13" in letter

    asked = client.post(f"/dead-letters/{dlq}/replay", data={"letter": ["0:0"]})
    assert asked.status_code == 200 and "yes, replay" in asked.get_data(as_text=True)
    nonce = re.search(r'name="nonce" value="([^"]+)"', asked.get_data(as_text=True)).group(1)
    done = client.post(
        f"/dead-letters/{dlq}/replay", data={"letter": ["0:0"], "confirm": "yes", "nonce": nonce}
    )
    assert done.status_code == 303
    progress = done.headers["Location"]

    def replayed() -> bool:
        return client.get(f"{progress}.json").get_json()["state"] == "done"

    assert wait_until(replayed, timeout=30)
    assert wait_until(lambda: ran.count(13) == 2, timeout=30), "the replayed job did not run"
    again = client.post(
        f"/dead-letters/{dlq}/replay", data={"letter": ["0:0"], "confirm": "yes", "nonce": nonce}
    )
    assert again.status_code == 400  # a confirmation is used once
    assert "replayed" in client.get(f"/dead-letters/{dlq}").get_data(as_text=True)


def test_replays_need_the_token_when_one_is_set_and_loopback_otherwise(
    kafka_app, dashboard
) -> None:
    app = kafka_app(status_topic=unique_name("status"))
    with_token = dashboard(app, token="s3cret", sample_interval=60)
    form = {"letter": ["0:0"]}
    assert with_token.post("/dead-letters/x.dlq/replay", data=form).status_code == 401
    basic = base64.b64encode(b"ops:wrong").decode()
    refused = with_token.post(
        "/dead-letters/x.dlq/replay", data=form, headers={"Authorization": f"Basic {basic}"}
    )
    assert refused.status_code == 401
    basic = base64.b64encode(b"ops:s3cret").decode()
    allowed = with_token.post(
        "/dead-letters/x.dlq/replay", data=form, headers={"Authorization": f"Basic {basic}"}
    )
    assert allowed.status_code == 404  # past the check: that topic does not exist
    exposed = dashboard(app, loopback=False, sample_interval=60)
    assert exposed.post("/dead-letters/x.dlq/replay", data=form).status_code == 403
    # Only dead-letter topics are read; posts from another origin and framing are refused.
    plain = dashboard(app, sample_interval=60)
    assert plain.get("/dead-letters/some-other-topic").status_code == 404
    page = plain.get("/")
    assert page.headers["X-Frame-Options"] == "DENY"
    crossing = plain.post(
        "/dead-letters/x.dlq/replay", data=form, headers={"Origin": "http://evil.example"}
    )
    assert crossing.status_code == 403
    assert plain.get("/", headers={"Host": "evil.example"}).status_code == 400
