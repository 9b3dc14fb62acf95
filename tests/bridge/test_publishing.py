"""Publishing: failures reach the caller; messages travel as records with their headers."""

from __future__ import annotations

import pytest
from celery import Celery
from kombu.exceptions import OperationalError

from celery_bridge.testing import test_transport_options
from kafka_jobs.broker import free_port
from kafka_jobs.errors import EnqueueError
from kafka_jobs.testing import BrokerInfo


def _app(url: str, **options: object) -> Celery:
    app = Celery("publish-test", set_as_current=False)
    app.conf.update(
        broker_url=url,
        broker_transport_options=test_transport_options(**options),
        task_publish_retry=False,
        broker_connection_retry=False,
        broker_connection_max_retries=1,
    )
    return app


def test_unreachable_broker_raises_at_publish() -> None:
    app = _app(f"kafkajobs://127.0.0.1:{free_port()}", connect_timeout=2.0)
    with pytest.raises(OperationalError, match="no Kafka broker"):
        app.send_task("proj.add", (1, 2))


def test_oversized_message_is_refused(kafka_broker: BrokerInfo) -> None:
    app = _app(f"kafkajobs://{kafka_broker.bootstrap_servers}", max_message_bytes=10_000)
    with pytest.raises(EnqueueError, match="max_message_bytes"):
        app.send_task("proj.add", ("x" * 20_000, 1))
    app.send_task("proj.add", ("x" * 100, 1))  # a message under the limit goes


def test_confirm_publish_waits_for_the_broker(kafka_broker: BrokerInfo) -> None:
    # With confirms, send_task returns once the broker acknowledged: nothing in flight.
    # Without them (linger of a few ms), the record is typically still on its way.
    for confirm, in_flight_after in ((True, False), (False, True)):
        app = _app(f"kafkajobs://{kafka_broker.bootstrap_servers}", confirm_publish=confirm)
        with app.connection_for_write() as conn:
            producer = conn.default_channel.connection.producer
            producer.flush(10)
            app.send_task("proj.add", (1, 2), connection=conn)
            assert bool(producer._in_flight) is in_flight_after
            producer.flush(10)
