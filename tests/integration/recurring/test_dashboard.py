"""The dashboard's schedules: last and next run per schedule, read from the schedules topic."""

from __future__ import annotations

import datetime
import threading

import pytest

pytest.importorskip("flask")

from kafka_jobs import Event
from kafka_jobs.testing import wait_until


def test_schedules_with_last_and_next_run(kafka_app, new_topic, dashboard) -> None:
    app = kafka_app(default_topic=new_topic(), status_interval=0, summary_interval=0)
    fired: list[int] = []
    ran = threading.Event()

    def on_fired(event: Event) -> None:
        if event.name == "schedule.fired":
            fired.append(event.payload["fire_time"])

    app.events.subscribe(on_fired)

    @app.job(name="dash.tick")
    def tick() -> None:
        ran.set()

    app.recurring(tick, every=1, name="tick")
    app.recurring(tick, cron="0 0 1 1 *", name="new-year", misfire="skip")
    with app.worker(concurrency=1):
        assert wait_until(lambda: len(fired) >= 2, 60)
        assert ran.wait(30)
    client = dashboard(app, sample_interval=60)
    body = client.get("/api/schedules").get_json()
    assert (body["group"], body["error"]) == (app.settings.group_id, None)
    rows = {row["name"]: row for row in body["schedules"]}
    assert rows["tick"]["task"] == "dash.tick" and rows["tick"]["when"] == "every 1s"
    assert rows["tick"]["last_fire_ms"] == fired[-1]  # the last one the leader recorded
    assert rows["tick"]["next_ms"] == fired[-1] + 1000 and rows["tick"]["paused"] is False
    year = datetime.datetime.now(datetime.UTC).year + 1
    new_year = int(datetime.datetime(year, 1, 1, tzinfo=datetime.UTC).timestamp() * 1000)
    assert rows["new-year"]["last_fire_ms"] is None and rows["new-year"]["next_ms"] == new_year
    assert rows["new-year"]["misfire"] == "skip"
    page = client.get("/schedules")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-schedule="tick"' in html and "cron 0 0 1 1 * UTC" in html
