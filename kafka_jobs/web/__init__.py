"""`kafka-jobs web`: a dashboard of workers, partitions, lag and dead letters (needs Flask).

    kafka-jobs web -A myapp.jobs --port 8088

It reads only the broker: worker states from the status topic, offsets and
dead letters from their topics. See `views` for what is shown and allowed.
"""

from __future__ import annotations

from kafka_jobs.web.server import DashboardServer

__all__ = ["DashboardServer"]
