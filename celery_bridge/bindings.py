"""AMQP binding lookups in a kombu channel's in-memory exchange state, with types.

kombu's virtual channel and exchange types are not annotated; these wrappers give
the two lookups the transport needs a typed signature, in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, cast

from kombu.transport import virtual
from kombu.transport.virtual.exchange import ExchangeType

# A binding row as kombu's exchange types match it: (routing key or pattern, regex, queue).
_Table = list[tuple[Any, ...]]
_Lookup = Callable[[_Table, str, str, None], Collection[str]]


def _exchange_type(channel: virtual.Channel, exchange: str) -> ExchangeType:
    # Unannotated in kombu: the ExchangeType of the exchange's declared type (direct if unknown).
    typeof = cast(Callable[[str], ExchangeType], channel.typeof)
    return typeof(exchange)


def routed_queues(channel: virtual.Channel, exchange: str, routing_key: str) -> Collection[str]:
    """The queues a publish to (`exchange`, `routing_key`) reaches; none for an unknown exchange."""
    # Unannotated in kombu: the exchange's binding table; KeyError for an unknown exchange.
    get_table = cast(Callable[[str], _Table], channel.get_table)
    try:
        lookup = cast(_Lookup, _exchange_type(channel, exchange).lookup)
        return lookup(get_table(exchange), exchange, routing_key, None)
    except KeyError:
        return []


def binds(channel: virtual.Channel, queue: str, exchange: str, routing_key: str) -> bool:
    """True if one of `queue`'s bindings to `exchange` matches `routing_key`."""
    for bound_exchange, binding_key, arguments in channel.state.queue_bindings(queue):
        if bound_exchange != exchange:
            continue
        kind = _exchange_type(channel, exchange)
        prepare_bind = cast(Callable[[str, str, str, Any], tuple[Any, ...]], kind.prepare_bind)
        lookup = cast(_Lookup, kind.lookup)
        table = [prepare_bind(queue, exchange, binding_key, arguments)]
        if lookup(table, exchange, routing_key, None):
            return True
    return False
