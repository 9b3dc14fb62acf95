"""Celery on Kafka: importing this package registers the ``kafkajobs://`` URL scheme.

    import celery_bridge  # noqa: F401
    app = Celery("proj", broker="kafkajobs://localhost:9092", backend="kafkajobs://localhost:9092")

for the broker (a kombu transport) and the result backend (`celery_bridge.backend`);
without the import, ``broker_transport="celery_bridge.transport:Transport"`` and
``result_backend="celery_bridge.backend:KafkaBackend"`` name them.
"""

from kombu.transport import TRANSPORT_ALIASES

SCHEME = "kafkajobs"
TRANSPORT = "celery_bridge.transport:Transport"
BACKEND = "celery_bridge.backend:KafkaBackend"

TRANSPORT_ALIASES.setdefault(SCHEME, TRANSPORT)

try:  # the transport needs only kombu; the result backend is Celery's
    from celery.app.backends import BACKEND_ALIASES  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover  (kombu without Celery)
    pass
else:
    BACKEND_ALIASES.setdefault(SCHEME, BACKEND)

__all__ = ["BACKEND", "SCHEME", "TRANSPORT"]
