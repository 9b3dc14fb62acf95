"""Canvas: signatures, chains, groups and chords of jobs, joined in Kafka.

    from kafka_jobs import chain, chord, group

    chain(fetch.s(url), parse.s(), store.s()).delay().get(timeout=30)
    group(square.s(n) for n in range(10)).delay().get(timeout=30)
    chord([square.s(n) for n in range(10)], total.s()).delay().get(timeout=30)

There is no coordinator: what comes next travels in the records (headers
`kj-chain`, `kj-chord`, `kj-once`) and the state of a chord is the members'
outcomes in the results topic, so every task of a canvas must keep its result.
Ids are fixed when the canvas is built, which makes re-enqueueing a step after
a crash idempotent. The client side is `primitives` (and `signature`,
`results` for the handles); what workers do, and why a chord's callback runs
once even when workers are killed, is described in `kafka_jobs.canvas.worker`.
"""

from kafka_jobs.canvas.primitives import Chain, Chord, Group, chain, chord, group
from kafka_jobs.canvas.results import ChainResult, ChordResult, GroupResult
from kafka_jobs.canvas.signature import Signature

__all__ = [
    "Chain",
    "ChainResult",
    "Chord",
    "ChordResult",
    "Group",
    "GroupResult",
    "Signature",
    "chain",
    "chord",
    "group",
]
