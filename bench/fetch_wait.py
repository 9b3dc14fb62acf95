"""How a broker answers a waiting fetch: raw producer-to-consumer latency per fetch setting.

    python -m bench.fetch_wait [--broker embedded|apache] [--rate 1000] [--seconds 3]
        [--waits 500,250,100,10] [--out -]

Explains the embedded broker's latency figure (bench/latency.py): a plain confluent-kafka
`Producer` (the kafka-jobs producer settings, linger.ms 5) sends `{"sent": time.time()}`
at a steady `--rate` to a fresh topic of 6 partitions for `--seconds`; a plain `Consumer`
in a thread of this process, assigned every partition from the start (no group, so no
join), calls `poll(0.1)` and notes when each record came out. For each
`fetch.wait.max.ms` of `--waits` (fetch.min.bytes 1, librdkafka's default), and once with
fetch.min.bytes 1 MB at the first wait, it reports p50 / p99 / max of the latency and the
fetch responses that brought records: records that come out of poll() less than 2 ms
apart are counted as one response (librdkafka hands a response's records over
together), and the median interval between responses is given. The first 0.5 s of each
variant is left out. Writes nothing unless `--out` names a file (then appends a section).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bench import common
from bench.throughput import make_app

PARTITIONS = 6
WARMUP = 0.5  # seconds of each variant left out
SAME_RESPONSE = 0.002  # records out of poll() closer than this came in one fetch response


@dataclass
class Variant:
    """One consumer setting and what it measured."""

    wait_ms: int
    min_bytes: int = 1
    latencies: list[float] = field(default_factory=list)  # ms
    arrivals: list[float] = field(default_factory=list)  # time.time() per record
    error: str | None = None

    @property
    def title(self) -> str:
        return f"fetch.wait.max.ms {self.wait_ms}, fetch.min.bytes {self.min_bytes:,}"

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile of the latencies (ms)."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    def responses(self) -> tuple[int, float | None]:
        """Fetch responses that brought records, and the median interval between them (ms)."""
        starts = [
            t
            for i, t in enumerate(self.arrivals)
            if i == 0 or t - self.arrivals[i - 1] > SAME_RESPONSE
        ]
        gaps = [(b - a) * 1000 for a, b in itertools.pairwise(starts)]
        return len(starts), (statistics.median(gaps) if gaps else None)

    def row(self) -> list[str]:
        if self.error is not None:
            return [self.title, "FAILED", self.error, "", "", ""]
        count, gap = self.responses()
        return [
            self.title,
            *(fmt(self.percentile(q)) for q in (0.5, 0.99, 1.0)),
            str(len(self.latencies)),
            f"{count} ({fmt(gap)} apart)",
        ]


def fmt(ms: float | None) -> str:
    return "n/a" if ms is None else f"{ms:.1f} ms" if ms < 100 else f"{ms:,.0f} ms"


def measure(bootstrap: str, variant: Variant, rate: float, seconds: float) -> None:
    """Send at `rate` for `seconds` while a consumer thread with `variant`'s settings reads."""
    topic = common.create_topic(bootstrap, "bench-fetch-wait", PARTITIONS)
    producer = Producer(make_app(bootstrap).settings.producer_settings())
    producer.list_topics(topic, timeout=10)
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": common.unique("bench-fetch-wait"),  # required, not used: assign()
        "enable.auto.commit": False,
        "fetch.wait.max.ms": variant.wait_ms,
        "fetch.min.bytes": variant.min_bytes,
        "logger": common.LIBRDKAFKA_LOG,
    }
    consumer = Consumer(config)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    stop = threading.Event()
    begin = time.time() + WARMUP

    def read() -> None:
        while not stop.is_set():
            record = consumer.poll(0.1)
            if record is None or record.error() is not None:
                continue
            now = time.time()
            sent = json.loads(record.value() or b"{}")["sent"]
            if sent >= begin:
                variant.latencies.append((now - sent) * 1000)
                variant.arrivals.append(now)

    reader = threading.Thread(target=read, name="fetch-wait-reader", daemon=True)
    reader.start()
    try:
        total = int(rate * (seconds + WARMUP))
        start = time.monotonic()
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            producer.produce(topic, json.dumps({"sent": time.time()}).encode())
            producer.poll(0)
        if producer.flush(10):
            variant.error = "records undelivered after the flush"
        # Bounded wait for the last records: the slowest setting answers within its wait.
        expected = int(rate * seconds) - 2
        deadline = time.monotonic() + 2 + variant.wait_ms / 1000
        while len(variant.latencies) < expected and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        reader.join(5)
        consumer.close()
    variant.arrivals.sort()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.arg_parser("bench.fetch_wait", __doc__)
    common.add_options(
        parser,
        ("--rate", 1000.0, "records per second"),
        ("--seconds", 3.0, "seconds measured per setting (after 0.5 s left out)"),
        ("--waits", "500,250,100,10", "fetch.wait.max.ms values, comma-separated"),
        ("--out", "-", "results file to append a section to; '-' (default) for none"),
    )
    args = parser.parse_args(argv)
    args.waits = [int(w) for w in args.waits.split(",") if w.strip()]
    if not args.waits or min(args.waits) < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--waits: integers >= 1; --rate and --seconds positive")
    return args


HEADER = ["consumer setting", "p50", "p99", "max", "records", "fetch responses with records"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = common.begin("bench.fetch_wait")
    variants = [Variant(w) for w in args.waits] + [Variant(args.waits[0], 1_000_000)]
    with common.broker(args.broker) as handle:
        common.progress(f"broker: {handle.description} at {handle.bootstrap}")
        for variant in variants:
            common.progress(f"{variant.title} ...")
            try:
                measure(handle.bootstrap, variant, args.rate, args.seconds)
            except Exception as exc:
                variant.error = repr(exc)
            common.progress("  " + " | ".join(variant.row()[1:]))
    rows = [v.row() for v in variants]
    print()
    print(f"broker: {handle.description}; {args.rate:,.0f} records/s, {PARTITIONS} partitions")
    print(common.text_table(HEADER, rows))
    if args.out != "-":
        text = "\n".join(
            [
                f"#### Fetch settings on {handle.name} (bench/fetch_wait.py)",
                "",
                *common.report_head(invocation.command, invocation.date, invocation.load_average()),
                f"- broker: {handle.description}; {args.rate:,.0f} records/s,"
                f" {PARTITIONS} partitions, {args.seconds} s per setting",
                "",
                common.markdown_table(HEADER, rows),
                "",
            ]
        )
        common.append_section(Path(args.out), text)
    return 1 if any(v.error for v in variants) else 0


if __name__ == "__main__":
    sys.exit(main())
