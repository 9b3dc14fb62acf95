"""Topics as code: what an app declares, how the cluster differs, and bringing it in line.

An app declares its topics through `@app.job(partitions=..., replication_factor=...,
config={...})` and `app.configure_topic(...)` (the same keywords), and implies the
rest: its dead-letter topics, the delay tiers, the results topic (when a job keeps
its result) and the status topic, each with the settings a worker would create it
with. `plan` compares that with the cluster; `migrate` creates missing topics, adds
partitions and sets the declared configs. It never deletes, never shrinks and
never changes a replication factor (that needs a reassignment): those differences
are reported as warnings and left alone. A second `migrate` finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.cimpl import NewPartitions

from kafka_jobs.connection.admin import TopicCreationFailed, admin_client, create_missing
from kafka_jobs.errors import ConfigurationError

if TYPE_CHECKING:
    from kafka_jobs.app import App

T = TypeVar("T")
Action = Literal["create", "add-partitions", "set-config", "warn", "error"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as the app wants it; None / empty: whatever the cluster has."""

    name: str
    kind: str  # jobs, dead-letter, delay, results, status
    partitions: int | None = None
    replication_factor: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between a declared topic and the cluster."""

    topic: str
    action: Action
    detail: str


@dataclass(frozen=True, slots=True)
class Existing:
    """What the cluster has of one topic."""

    partitions: int
    replication_factor: int
    config: Mapping[str, str]


def declared(app: App) -> list[TopicSpec]:
    """Every topic `app` uses, with what it declares of each, sorted by name.

    Raises `ConfigurationError` when two declarations of one topic disagree.
    """
    specs: dict[str, TopicSpec] = {}
    for topic, options in app.topic_options.items():
        _add(
            specs,
            TopicSpec(
                topic,
                "jobs",
                options.partitions,
                options.replication_factor,
                dict(options.config or {}),
            ),
        )
    for task in app.tasks.values():
        flags = task.options.topic_flags
        spec = TopicSpec(task.options.topic, "jobs")
        if flags is not None:
            spec = TopicSpec(
                spec.name,
                "jobs",
                flags.partitions,
                flags.replication_factor,
                dict(flags.config or {}),
            )
        _add(specs, spec)
    settings = app.settings
    for topic in app.dead_letter_topics():
        _add(specs, TopicSpec(topic, "dead-letter", 1))
    for topic in app.delay_topics():
        _add(specs, TopicSpec(topic, "delay", 1))
    if settings.keep_result or any(task.keeps_result for task in app.tasks.values()):
        ttl_ms = str(int(settings.result_ttl * 1000))
        _add(
            specs,
            TopicSpec(
                settings.results_topic,
                "results",
                settings.results_partitions,
                config={"cleanup.policy": "compact,delete", "retention.ms": ttl_ms},
            ),
        )
    _add(specs, TopicSpec(settings.status_topic, "status", 1, config={"cleanup.policy": "compact"}))
    return sorted(specs.values(), key=lambda spec: spec.name)


def _add(specs: dict[str, TopicSpec], spec: TopicSpec) -> None:
    known = specs.get(spec.name)
    if known is None:
        specs[spec.name] = spec
        return
    config = dict(known.config)
    for name, value in spec.config.items():
        config[name] = _one(spec.name, name, config.get(name), value) or value
    specs[spec.name] = TopicSpec(
        spec.name,
        known.kind,
        _one(spec.name, "partitions", known.partitions, spec.partitions),
        _one(spec.name, "replication_factor", known.replication_factor, spec.replication_factor),
        config,
    )


def _one(topic: str, what: str, first: T | None, second: T | None) -> T | None:
    if first is not None and second is not None and first != second:
        raise ConfigurationError(f"topic {topic!r} is declared with {what} {first} and {second}")
    return first if first is not None else second


def differences(spec: TopicSpec, existing: Existing | None) -> list[Change]:
    """What `migrate` would do (or warn about) for one topic; empty when it matches."""
    name = spec.name
    if existing is None:
        parts = "the broker's default" if spec.partitions is None else str(spec.partitions)
        extra = f", config {dict(spec.config)}" if spec.config else ""
        return [Change(name, "create", f"{spec.kind} topic, {parts} partitions{extra}")]
    changes: list[Change] = []
    if spec.partitions is not None and spec.partitions > existing.partitions:
        changes.append(
            Change(name, "add-partitions", f"{existing.partitions} -> {spec.partitions}")
        )
    elif spec.partitions is not None and spec.partitions < existing.partitions:
        changes.append(
            Change(
                name,
                "warn",
                f"has {existing.partitions} partitions, declared"
                f" {spec.partitions}: partitions are never removed, left as is",
            )
        )
    wanted_rf = spec.replication_factor
    if wanted_rf is not None and wanted_rf != existing.replication_factor:
        changes.append(
            Change(
                name,
                "warn",
                f"replication factor {existing.replication_factor}, declared"
                f" {wanted_rf}: changing it needs a partition reassignment, left as is",
            )
        )
    for key, value in sorted(spec.config.items()):
        current = existing.config.get(key)
        if current != value:
            changes.append(Change(name, "set-config", f"{key}: {current} -> {value}"))
    return changes


def plan(app: App, timeout: float = 15.0) -> list[Change]:
    """Every difference between `app`'s topics and its cluster (nothing is changed)."""
    admin = admin_client(app.settings.admin_settings())
    specs = declared(app)
    existing = _describe(admin, specs, timeout)
    return [change for spec in specs for change in differences(spec, existing.get(spec.name))]


def migrate(app: App, timeout: float = 15.0) -> list[Change]:
    """Apply `plan`: returns what was done, warnings, and errors (as `error` changes)."""
    admin = admin_client(app.settings.admin_settings())
    specs = {spec.name: spec for spec in declared(app)}
    existing = _describe(admin, specs.values(), timeout)
    done: list[Change] = []
    for spec in specs.values():
        for change in differences(spec, existing.get(spec.name)):
            done.append(_apply(admin, spec, change, timeout))
    return done


def _apply(admin: AdminClient, spec: TopicSpec, change: Change, timeout: float) -> Change:
    try:
        if change.action == "create":
            create_missing(
                admin,
                [spec.name],
                -1 if spec.partitions is None else spec.partitions,
                -1 if spec.replication_factor is None else spec.replication_factor,
                timeout,
                spec.config,
            )
        elif change.action == "add-partitions":
            assert spec.partitions is not None
            for future in admin.create_partitions(
                [NewPartitions(spec.name, spec.partitions)], request_timeout=timeout
            ).values():
                future.result(timeout)
        elif change.action == "set-config":
            key = change.detail.split(":", 1)[0]
            entry = ConfigEntry(key, spec.config[key], incremental_operation=AlterConfigOpType.SET)
            resource = ConfigResource(
                ConfigResource.Type.TOPIC, spec.name, incremental_configs=[entry]
            )
            for future in admin.incremental_alter_configs([resource]).values():
                future.result(timeout)
    except (KafkaException, TopicCreationFailed) as exc:
        return Change(spec.name, "error", f"{change.action} {change.detail}: {_reason(exc)}")
    return change


def _reason(exc: Exception) -> str:
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return str(getattr(error, "str", lambda: exc)()) if error is not None else str(exc)


def _describe(
    admin: AdminClient, specs: Iterable[TopicSpec], timeout: float
) -> dict[str, Existing]:
    """Partitions, replication factor and configs of the topics that exist."""
    metadata = admin.list_topics(timeout=timeout).topics
    names = [spec.name for spec in specs if spec.name in metadata]
    resources = {name: ConfigResource(ConfigResource.Type.TOPIC, name) for name in names}
    configs: dict[str, dict[str, str]] = {}
    if resources:
        futures = admin.describe_configs(list(resources.values()), request_timeout=timeout)
        for name, resource in resources.items():
            entries = futures[resource].result(timeout)
            configs[name] = {k: e.value for k, e in entries.items() if e.value is not None}
    found = {}
    for name in names:
        partitions = metadata[name].partitions
        replicas = min((len(p.replicas) for p in partitions.values()), default=0)
        found[name] = Existing(len(partitions), replicas, configs.get(name, {}))
    return found


def table(changes: list[Change]) -> str:
    """The changes as an aligned text table, or a sentence when there are none."""
    if not changes:
        return "nothing to change: every declared topic matches the cluster"
    rows = [("TOPIC", "ACTION", "DETAIL"), *((c.topic, c.action, c.detail) for c in changes)]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}" for row in rows)
