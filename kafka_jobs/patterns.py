"""Topic patterns: which existing topics a worker subscribed by regular expression consumes.

librdkafka can subscribe to a regex itself, but its regex dialect cannot say
"except dead letters". The listener instead lists the cluster's topics every
`pattern_refresh_interval` seconds, selects them here, and subscribes to the
resulting list when it changes (which is what librdkafka would do internally).

A pattern never selects a dead-letter topic, a delay-tier topic or an internal
one (``__consumer_offsets``...): a broad pattern such as ``.*`` would otherwise
consume its own dead letters, fail them again and dead-letter them again, in a
loop. Topics named explicitly are always consumed, dead letters included.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kafka_jobs import deadletter

DEAD_LETTER_SUFFIX = deadletter.default_topic("")
"""The suffix of default dead-letter topic names (``.dlq``)."""


@dataclass(frozen=True)
class TopicPattern:
    """A regular expression over topic names (whole-name match) plus explicit topics.

    dead_letter_of: the dead-letter topic of a topic (None when it has none).
    delay_prefix: delayed jobs' tier topics are ``<prefix>.<N>s``; never selected.
    never: further topics never selected (the dead-letter topics jobs name).
    """

    regex: re.Pattern[str]
    explicit: frozenset[str] = frozenset()
    never: frozenset[str] = frozenset()
    dead_letter_of: Callable[[str], str | None] = field(default=deadletter.default_topic)
    delay_prefix: str = "kafka-jobs.delay"

    @classmethod
    def compile(cls, pattern: str, **options: object) -> TopicPattern:
        """Compile `pattern`; a bad one raises `ValueError` with the reason."""
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid topic pattern {pattern!r}: {exc}") from None
        return cls(regex, **options)  # type: ignore[arg-type]

    def select(self, names: Iterable[str]) -> list[str]:
        """The topics to consume, given the names of the topics that exist; sorted."""
        names = set(names)
        matched = {name for name in names if self.regex.fullmatch(name)}
        dead_letters = {self.dead_letter_of(name) for name in names | self.explicit} | self.never
        chosen = {
            name
            for name in matched
            if name not in dead_letters
            and not name.endswith(DEAD_LETTER_SUFFIX)
            and not name.startswith("__")
            and not name.startswith(f"{self.delay_prefix}.")
        }
        return sorted(chosen | self.explicit)
