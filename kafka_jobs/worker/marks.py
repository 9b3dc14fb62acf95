"""What the listener commits for one partition: the offset, and the metadata that rides along.

The offset is the lowest unfinished record (lowest-contiguous). When records above
it are finished and the broker keeps commit metadata, the commit still goes out
(at the first unfinished offset) so a new owner learns, from the bitmap in the
metadata, which of them not to run again.
"""

from __future__ import annotations

from kafka_jobs.connection.client import Mark
from kafka_jobs.options import TopicOptions
from kafka_jobs.processing import offset_metadata
from kafka_jobs.processing.jobs import PartitionState


def mark_for(
    state: PartitionState, options: TopicOptions, metadata_supported: bool | None
) -> tuple[Mark, str | None] | None:
    """(the mark to commit, the job metadata in it), or None when there is nothing to commit."""
    offset = state.tracker.committable()
    if offset is None and metadata_supported is not False:
        offset = state.tracker.held_at()
    if offset is None:
        return None
    virtual = options.virtual_partitions
    strategy = virtual.offset_metadata_strategy if virtual is not None else "exact"
    user = state.metadata_for_commit(offset, strategy)
    if metadata_supported is False:
        metadata = offset_metadata.compose("", user)
    else:
        # Kafka measures metadata in UTF-16 code units (Java strings).
        used = len(user.encode("utf-16-le")) // 2 + 1 if user is not None else 0
        room = offset_metadata.MAX_CHARS - used
        bitmap = offset_metadata.encode(offset, state.tracker.done_above(), room)
        metadata = offset_metadata.compose(bitmap, user)
    return Mark((state.topic, state.partition), offset, metadata), user


def finished_above(state: PartitionState, offset: int, metadata: str | None) -> None:
    """Take over a former owner's commit: its job metadata, and the records it finished above."""
    state.committed_metadata = offset_metadata.split(metadata)[1]
    done = offset_metadata.decode(offset, metadata)
    if done:
        state.tracker.mark_done(done)
