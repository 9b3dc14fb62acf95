"""Celery on Kafka: importing this package registers the ``kafkajobs://`` broker URL scheme.

    import celery_bridge  # noqa: F401
    app = Celery("proj", broker="kafkajobs://localhost:9092")

or, without the import, ``broker_transport="celery_bridge.transport:Transport"``.
"""

from kombu.transport import TRANSPORT_ALIASES

SCHEME = "kafkajobs"
TRANSPORT = "celery_bridge.transport:Transport"

TRANSPORT_ALIASES.setdefault(SCHEME, TRANSPORT)

__all__ = ["SCHEME", "TRANSPORT"]
