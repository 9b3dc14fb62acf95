"""The results topic at worker start: created if missing, its partitions read, policy checked."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kafka_jobs.connection.admin import partition_count, topic_config

if TYPE_CHECKING:
    from kafka_jobs.app import App
    from kafka_jobs.results.writer import ResultWriter

log = logging.getLogger("kafka_jobs.worker")


def prepare(app: App, results: ResultWriter) -> None:
    """Create the results topic if missing; write with its actual partition count."""
    settings = app.settings
    ttl_ms = str(int(settings.result_ttl * 1000))
    try:
        app.create_topics(
            [results.topic],
            partitions=settings.results_partitions,
            config={"cleanup.policy": "compact,delete", "retention.ms": ttl_ms},
        )
        partitions = partition_count(settings.admin_settings(), results.topic)
    except Exception as exc:  # its first write says it again if this matters
        log.warning("could not prepare the results topic %s: %s", results.topic, exc)
        return
    if partitions:
        results.partitions = partitions
    else:
        log.warning("the results topic %s is missing: results cannot be kept", results.topic)
    check_compaction(app, results.topic)


def check_compaction(app: App, topic: str) -> None:
    """Say so when the results topic does not compact: it would keep every state forever."""
    try:
        policy = topic_config(app.settings.admin_settings(), topic).get("cleanup.policy")
    except Exception as exc:  # a broker that cannot describe configs: nothing to check
        log.info("could not read the configuration of %s: %s", topic, exc)
        return
    if policy is not None and "compact" not in policy:
        log.warning(
            "the results topic %s is not compacted (cleanup.policy=%s): every state of every"
            " job stays until retention; set cleanup.policy=compact,delete",
            topic,
            policy,
        )
