"""The dashboard's pages and endpoints (Flask, server-rendered, a little script for live parts).

Pages: the overview (`/`, `/live`, `/api/overview`), `/health`, dead letters
(`/dead-letters/...`, replays), recent job results (`/results`, `/api/results`) and
recurring schedules (`/schedules`, `/api/schedules`).

Read-only pages need nothing. Replaying dead letters is the one write: it always
goes through a confirmation page whose form carries a one-time nonce, and it is
allowed when the server listens on loopback only, or when the request gives the
configured token (HTTP basic auth password, or `Authorization: Bearer <token>`).
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from kafka_jobs import dlq
from kafka_jobs.app import App
from kafka_jobs.errors import KafkaJobsError
from kafka_jobs.instrumentation.status import control_counts
from kafka_jobs.web.data import Sampler
from kafka_jobs.web.replays import Replays
from kafka_jobs.web.results import RecentResultsCache
from kafka_jobs.web.schedules import SchedulesCache

_NONCE_TTL = 600.0
_MAX_LETTERS = 10_000
"""About how many records of a dead-letter topic a page reads (the oldest)."""
_MAX_VALUE_CHARS = 64_000


# The routes are closures over the app and the token check: each is short, but
# mccabe counts them all into the factory.
def create_app(  # noqa: C901
    app: App,
    *,
    token: str | None = None,
    loopback: bool = True,
    sample_interval: float = 5.0,
    live_refresh: float = 2.0,
) -> Flask:
    """The dashboard of `app`'s cluster as a Flask application (sampling starts at once).

    token: required for replays when set; without it replays are allowed only when
        `loopback` says the server listens on the loopback interface alone.
    """
    web = Flask(__name__)
    if loopback:  # DNS rebinding: a page elsewhere must not reach us by another name
        web.config["TRUSTED_HOSTS"] = ["127.0.0.1", "localhost", "::1", "[::1]"]
    sampler = Sampler(app, sample_interval).start()
    replays = Replays(app)
    results = RecentResultsCache(app)
    schedules = SchedulesCache(app)
    nonces: dict[str, float] = {}
    nonce_lock = threading.Lock()
    web.extensions["kafka_jobs"] = {"sampler": sampler, "replays": replays}
    web.jinja_env.filters["sparkline"] = sparkline
    web.jinja_env.filters["when"] = _when
    web.jinja_env.filters["duration"] = _duration
    web.jinja_env.filters["control_counts"] = lambda totals: list(control_counts(totals).items())
    web.jinja_env.globals["live_refresh"] = live_refresh

    def writes_allowed() -> bool:
        if token is None:
            return loopback
        given = request.authorization
        if given is not None and given.type == "basic" and given.password is not None:
            return hmac.compare_digest(given.password, token)
        header = request.headers.get("Authorization", "")
        return header.startswith("Bearer ") and hmac.compare_digest(header[7:], token)

    def require_writes() -> None:
        if writes_allowed():
            return
        if token is None:
            abort(403, "replays from other hosts need a token: start with --token")
        abort(
            Response(
                "a token is needed to replay dead letters",
                401,
                {"WWW-Authenticate": 'Basic realm="kafka-jobs"'},
            )
        )

    def new_nonce() -> str:
        nonce = secrets.token_urlsafe(16)
        now = time.monotonic()
        with nonce_lock:
            for old in [n for n, at in nonces.items() if now - at > _NONCE_TTL]:
                del nonces[old]
            nonces[nonce] = now
        return nonce

    def use_nonce(nonce: str) -> bool:
        with nonce_lock:
            return nonces.pop(nonce, None) is not None

    @web.before_request
    def same_origin_posts() -> None:
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin and urlsplit(origin).netloc != request.host:
            abort(403, "cross-origin request refused")

    @web.after_request
    def no_framing(response: Response) -> Response:
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def require_dead_letter_topic(topic: str) -> None:
        """Only topics shown as dead-letter topics are read or replayed from."""
        if topic not in {row.topic for row in sampler.latest().dead_letters}:
            abort(404, f"{topic!r} is not a dead-letter topic")

    def read_letters(topic: str) -> dlq.DeadLetterTopic:
        """A dead-letter topic's letters, at most `_MAX_LETTERS` records."""
        require_dead_letter_topic(topic)
        try:
            return dlq.read(app, topic, idle=0.5, timeout=30, max_records=_MAX_LETTERS)
        except KafkaJobsError as exc:
            abort(404, str(exc))

    @web.get("/")
    def overview() -> str:
        return render_template("overview.html", **_live_context(sampler))

    @web.get("/live")
    def live() -> str:
        return render_template("_live.html", **_live_context(sampler))

    @web.get("/api/overview")
    def api_overview() -> Response:
        view = sampler.latest()
        return jsonify(
            {
                "at": view.at,
                "error": view.error,
                "delayed_waiting": view.delayed_waiting,
                "groups": [
                    {
                        "name": g.name,
                        "lag": g.lag,
                        "jobs_per_second": g.jobs_per_second,
                        "workers": g.workers,
                        "partitions": [p.as_dict() for p in g.partitions],
                        "recent_failures": g.failures,
                        "retrying": g.retrying,
                    }
                    for g in view.groups
                ],
                "dead_letters": [p.as_dict() for p in view.dead_letters],
            }
        )

    @web.get("/health")
    def health() -> tuple[Response, int]:
        view = sampler.latest(wait=5.0)
        fresh = time.time() - view.at < max(3 * sample_interval, 15.0)
        ok = view.error is None and fresh
        body = {
            "status": "ok" if ok else "degraded",
            "broker": view.error is None,
            "error": view.error,
            "sampled_at": view.at,
            "workers": sum(len(g.workers) for g in view.groups),
        }
        return jsonify(body), 200 if ok else 503

    @web.get("/results")
    def recent_results() -> str:
        task = request.args.get("task") or None
        found = results.get()
        shown = {t: rows for t, rows in found.by_task.items() if task is None or t == task}
        return render_template(
            "results.html", found=found, shown=shown, tasks=sorted(found.by_task), task=task
        )

    @web.get("/api/results")
    def api_results() -> Response:
        return jsonify(results.get().as_dict())

    @web.get("/schedules")
    def recurring_schedules() -> str:
        return render_template("schedules.html", view=schedules.get())

    @web.get("/api/schedules")
    def api_schedules() -> Response:
        return jsonify(schedules.get().as_dict())

    @web.get("/dead-letters/<topic>")
    def dead_letter_topic(topic: str) -> str:
        task, error = request.args.get("task") or None, request.args.get("error") or None
        read = read_letters(topic)
        letters = [
            letter
            for letter in read.letters
            if (task is None or letter.task == task)
            and (error is None or letter.info.get("exception", "").endswith(error))
        ]
        return render_template(
            "dead_letters.html",
            topic=topic,
            letters=letters,
            replayed=read.replayed,
            tasks=sorted({letter.task for letter in read.letters}),
            errors=sorted({letter.info.get("exception", "?") for letter in read.letters}),
            task=task,
            error=error,
            writes=writes_allowed(),
        )

    @web.get("/dead-letters/<topic>/<int:partition>/<int:offset>")
    def dead_letter(topic: str, partition: int, offset: int) -> str:
        read = read_letters(topic)
        letter = next(
            (d for d in read.letters if (d.partition, d.offset) == (partition, offset)), None
        )
        if letter is None:
            abort(404, f"no dead letter at {topic}[{partition}]@{offset}")
        return render_template(
            "letter.html",
            letter=letter,
            value=_show_value(letter.value),
            replayed=(partition, offset) in read.replayed,
            writes=writes_allowed(),
        )

    @web.post("/dead-letters/<topic>/replay")
    def replay(topic: str) -> ResponseReturnValue:
        require_writes()
        require_dead_letter_topic(topic)
        places = _places(request.form.getlist("letter"))
        if not places:
            abort(400, "no dead letter chosen")
        if request.form.get("confirm") != "yes":
            read = read_letters(topic)
            chosen = [d for d in read.pending() if (d.partition, d.offset) in places]
            return render_template("confirm.html", topic=topic, letters=chosen, nonce=new_nonce())
        if not use_nonce(request.form.get("nonce", "")):
            abort(400, "this confirmation was used or has expired: choose the letters again")
        started = replays.start(topic, places)
        return redirect(url_for("replay_progress", replay_id=started.id), code=303)

    @web.get("/replays/<replay_id>")
    def replay_progress(replay_id: str) -> str:
        found = replays.get(replay_id)
        if found is None:
            abort(404, "no such replay")
        if found.state != "running":
            sampler.refresh()
        return render_template("replay.html", replay=found)

    @web.get("/replays/<replay_id>.json")
    def replay_json(replay_id: str) -> Response:
        found = replays.get(replay_id)
        if found is None:
            abort(404, "no such replay")
        return jsonify(found.__dict__)

    return web


def _live_context(sampler: Sampler) -> dict[str, object]:
    view = sampler.latest()
    return {"view": view, "history": sampler.history, "now": time.time()}


def _places(values: Iterable[str]) -> set[tuple[int, int]]:
    places = set()
    for value in values:
        partition, _, offset = value.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            abort(400, f"not a partition:offset: {value!r}")
        places.add((int(partition), int(offset)))
    return places


def _show_value(value: bytes | None) -> str:
    """A record value for people: pretty JSON when it is JSON, else text or base64."""
    if value is None:
        return "(no value)"
    try:
        return json.dumps(json.loads(value), indent=2, ensure_ascii=False)[:_MAX_VALUE_CHARS]
    except (ValueError, UnicodeDecodeError):
        pass
    try:
        return value.decode()[:_MAX_VALUE_CHARS]
    except UnicodeDecodeError:
        return "base64: " + base64.b64encode(value[:_MAX_VALUE_CHARS]).decode()


def _when(ms: object) -> str:
    """Milliseconds since the epoch as a UTC time of day."""
    if not isinstance(ms, int | float | str) or not str(ms).strip("-").isdigit():
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(ms) / 1000))


def _duration(ms: int | None) -> str:
    """Milliseconds for people: 850 ms, 2.4 s, 3.5 min."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def sparkline(points: list[tuple[float, int]], width: int = 240, height: int = 48) -> str:
    """An SVG line of (time, value) points, newest on the right; empty below two points."""
    if len(points) < 2:
        return f'<svg class="spark" width="{width}" height="{height}"></svg>'
    first, last = points[0][0], points[-1][0]
    span = max(last - first, 1e-6)
    top = max(max(v for _, v in points), 1)
    coordinates = " ".join(
        f"{(t - first) / span * (width - 2) + 1:.1f},{height - 1 - v / top * (height - 2):.1f}"
        for t, v in points
    )
    return (
        f'<svg class="spark" width="{width}" height="{height}" role="img"'
        f' aria-label="lag over the last {span:.0f} s, up to {top}">'
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{coordinates}"/>'
        f"</svg>"
    )
