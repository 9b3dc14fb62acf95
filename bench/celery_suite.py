"""Celery's own integration tests (t/integration of its sdist) on kafkajobs:// and on Redis.

    python -m bench.celery_suite [--broker embedded|apache] [--suites test_tasks,test_inspect]
        [--result-backend redis|kafkajobs] [-k EXPR] [--suite-timeout S] [--test-timeout S]
        [--out bench/RESULTS.md]

The yardstick of issue 19: Celery's integration tests pass on ``kafkajobs://`` with default
settings as many tests as with Redis as the broker, in less than 1.5 times Redis's time.
With ``--result-backend kafkajobs`` (issue 20) the kafkajobs:// run has kafkajobs:// as its
result backend too (`celery_bridge.backend`, at its defaults): Kafka is then the only
server it uses, and the baseline stays Redis as broker and backend; the goal is as many
passed tests as that baseline, counted over the tests Celery's suite runs on a non-Redis
result backend (it skips the others there: "Requires redis result backend").

Each invocation:

1. Celery's source distribution for the installed Celery version, from PyPI
   (``pip download --no-binary :all: --no-deps celery==<version>``, 5 min bound), kept
   unpacked in ``~/.cache/kafka-jobs/celery-sdist/celery-<version>/`` (fetched once).
2. The test dependencies Celery's suite needs, installed with pip into the running venv
   when missing, at the versions Celery's ``requirements/`` pins where it pins them:
   pydantic (``t/integration/tasks.py`` imports it), pytest-rerunfailures (the
   suite's ``flaky`` marks: in test_tasks up to 5 reruns on OSError /
   ConnectionError / TimeoutError, in test_inspect up to 5 on any failure),
   pytest-timeout (its ``timeout`` marks), redis (the result backend, and tasks that
   write to Redis). The ``subtests`` fixture comes with pytest >= 9
   (else pytest-subtests). A suite is skipped, and the report says so, when one cannot
   be installed.
3. A ``redis-server`` on a free loopback port without persistence, started here and
   stopped by PID at the end (`bench.celery_brokers.redis_server`): the result backend
   of every run, and the broker of the baseline; flushed (FLUSHALL) before every run.
4. The Kafka broker of ``--broker`` (`bench.common.broker`: embedded Tansu, or one
   Apache Kafka node), or ``KAFKA_BOOTSTRAP_SERVERS``.
5. For each suite of ``--suites``, first with Redis as the broker, then with kafkajobs://
   (the same Kafka broker for every suite, so topics outlive a run, as the Redis lists
   of a broker would without the flush), from the unpacked sdist directory::

       timeout -k 30 <suite-timeout> <venv>/bin/python -m pytest t/integration/<suite>.py \\
           -p celery_bridge -v -rfE -p no:cacheprovider --timeout <test-timeout> \\
           --durations 0 --durations-min 0.5 [-k EXPR]

   with ``TEST_BROKER`` = ``kafkajobs://HOST:PORT`` (nothing but the URL: every
   ``KAFKA_JOBS_*`` variable is removed from the environment, so the bridge runs at its
   defaults) or ``redis://127.0.0.1:PORT/0``, ``TEST_BACKEND`` = that Redis (with
   ``--result-backend kafkajobs``, the kafkajobs:// run's ``TEST_BACKEND`` is its
   ``TEST_BROKER`` URL), and
   ``REDIS_HOST`` / ``REDIS_PORT`` (read by the suite's ``get_redis_connection``), as
   Celery's ``t/integration/conftest.py`` reads them. The session worker is Celery's
   own (``celery.contrib.pytest``: a worker thread with a prefork pool, in the pytest
   process).

How ``celery_bridge`` gets imported: ``-p celery_bridge`` makes pytest import the
package as a plugin before it loads Celery's conftest; importing it registers the
``kafkajobs`` scheme in kombu's transport aliases (it defines no pytest hook, so it
is nothing more than an import), and the worker and its prefork children live in (or
fork from) that process. Nothing in Celery's tree is changed, no sitecustomize and no
PYTHONPATH. Both brokers get the same flag.

Counts are pytest's own summary line (a test that passed and then errored in teardown
counts in both); per-test outcomes come from the ``-v`` lines (the last one of a test
wins, so a rerun that passed counts as passed), which survive a run cut off by the
suite timeout; the report lists the test phases (``--durations``) where kafkajobs://
took longest beyond Redis. Wall time is the whole pytest process (collection, worker start-up and
shutdown included). ``--test-timeout`` bounds tests Celery did not mark (Celery's
marks win); ``--suite-timeout`` the whole run. Logs of every run stay in a directory
under /tmp (printed, and named in the report).

With ``--out`` the results go to RESULTS.md under "Celery's own integration tests
(bench/celery_suite.py)" (with ``--result-backend kafkajobs``: under "Celery's own
integration tests, kafkajobs:// as broker and result backend"), one block per
``--broker`` and a summary table of both
(`bench.common.record_side_by_side`); the section is created before "Earlier runs" if
missing. Exit code 1 when kafkajobs:// misses the yardstick on a suite, or a run failed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import common
from bench.celery_brokers import bridge_state, kafka_url, redis_server

SECTION = "## Celery's own integration tests (bench/celery_suite.py)"
NAME = "celery_suite"  # the key of the RESULTS.md blocks
BACKEND_SECTION = (
    "## Celery's own integration tests, kafkajobs:// as broker and result backend"
    " (bench/celery_suite.py --result-backend kafkajobs)"
)
BACKEND_NAME = "celery_suite_backend"
CACHE = Path.home() / ".cache" / "kafka-jobs" / "celery-sdist"
DOWNLOAD_TIMEOUT = 300.0
INSTALL_TIMEOUT = 600.0
KAFKAJOBS, REDIS = "kafkajobs", "redis"
SIDE_NAMES = {KAFKAJOBS: "kafkajobs://", REDIS: "redis://"}
TIME_FACTOR = 1.5  # the yardstick: kafkajobs:// time < 1.5x Redis's
DURATION_MIN = 0.5  # pytest --durations-min: shorter phases are not listed
SLOWER = 8  # phases listed in the report where kafkajobs:// took longest beyond Redis
OUTCOMES = ("passed", "failed", "errors", "skipped", "xfailed", "xpassed", "rerun")

# The modules Celery's t/integration needs beyond Celery itself: (module, distribution).
DEPENDENCIES = (
    ("pydantic", "pydantic"),
    ("pytest_rerunfailures", "pytest-rerunfailures"),
    ("pytest_timeout", "pytest-timeout"),
    ("redis", "redis"),
)


# --- Celery's source distribution and what its tests need ------------------------------------


def celery_version() -> str:
    return importlib.metadata.version("celery")


def sdist(version: str) -> Path:
    """The unpacked sdist of Celery `version` in the cache, downloaded and unpacked once."""
    target = CACHE / f"celery-{version}"
    if (target / "t" / "integration" / "conftest.py").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"celery-{version}.tar.gz"
    if not archive.exists():
        common.progress(f"downloading Celery {version}'s sdist from PyPI into {CACHE} ...")
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"),
                *("--disable-pip-version-check", "-d", str(CACHE), f"celery=={version}"),
            ],
            check=True,
            timeout=DOWNLOAD_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp, tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
        shutil.move(str(Path(tmp) / f"celery-{version}"), target)
    return target


def pinned(source: Path, distribution: str) -> str:
    """`distribution==X` as Celery's requirements/ pin it, else the bare name."""
    pattern = re.compile(rf"^{re.escape(distribution)}(\[[^\]]*\])?==([\w.]+)\s*(;.*)?$", re.I)
    for path in sorted((source / "requirements").rglob("*.txt")):
        for line in path.read_text().splitlines():
            match = pattern.match(line.strip())
            if match:
                return f"{distribution}=={match.group(2)}"
    return distribution


def ensure_dependencies(source: Path) -> tuple[list[str], list[str]]:
    """Install the missing test dependencies; (what was installed or found, what is missing)."""
    import pytest

    wanted = list(DEPENDENCIES)
    if int(pytest.__version__.split(".")[0]) < 9:
        wanted.append(("pytest_subtests", "pytest-subtests"))
    found, missing = [], []
    for module, distribution in wanted:
        if importlib.util.find_spec(module) is not None:
            found.append(f"{distribution} {importlib.metadata.version(distribution)}")
            continue
        requirement = pinned(source, distribution)
        common.progress(f"installing {requirement} (Celery's t/integration needs it) ...")
        try:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    requirement,
                ],
                check=True,
                timeout=INSTALL_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
            importlib.invalidate_caches()
            found.append(f"{requirement} (installed by this run)")
        except (subprocess.SubprocessError, OSError) as exc:
            missing.append(f"{requirement}: {exc}")
    return found, missing


# --- one run of one suite --------------------------------------------------------------------


@dataclass
class Run:
    suite: str
    side: str
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)  # test id -> last -v outcome
    messages: dict[str, str] = field(default_factory=dict)  # test id -> short summary text
    durations: dict[str, float] = field(default_factory=dict)  # "phase test id" -> seconds
    exit_code: int | None = None
    summary: str = ""  # pytest's last line
    log: Path | None = None
    error: str | None = None  # the run did not complete (timeout, skipped suite)

    def count(self, outcome: str) -> int:
        return self.counts.get(outcome, 0)

    def failing(self) -> list[str]:
        return [t for t, o in self.outcomes.items() if o in ("FAILED", "ERROR")]


VERBOSE_LINE = re.compile(
    r"^(t/integration/\S+?::.+?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS|RERUN)\b"
)
SKIP_REASON = re.compile(r" SKIPPED \((.*?)\)\s*(?:\[|$)")
SHORT_SUMMARY = re.compile(r"^(FAILED|ERROR) (t/integration/\S+?::.+?)(?: - (.*))?$")
DURATION_LINE = re.compile(r"^([\d.]+)s (setup|call|teardown)\s+(t/integration/\S+)")
SUMMARY_LINE = re.compile(r"^=+ (.*\bin [\d.]+s.*?) =+$")
SUMMARY_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|rerun)")


def parse_log(run: Run, text: str) -> None:
    for line in text.splitlines():
        match = VERBOSE_LINE.match(line)
        if match:
            test, outcome = match.groups()
            previous = run.outcomes.get(test)
            # A teardown error is reported after the test's own PASSED/FAILED line.
            if not (previous == "FAILED" and outcome == "ERROR"):
                run.outcomes[test] = outcome
            reason = SKIP_REASON.search(line) if outcome == "SKIPPED" else None
            if reason:
                run.messages[test] = reason.group(1)
            continue
        match = SHORT_SUMMARY.match(line)
        if match:
            run.messages[match.group(2)] = (match.group(3) or "").strip()
            continue
        match = DURATION_LINE.match(line)
        if match:
            seconds, phase, test = match.groups()
            run.durations[f"{phase} {test}"] = float(seconds)
            continue
        match = SUMMARY_LINE.match(line)
        if match:
            run.summary = match.group(1)
    if run.summary:
        for number, outcome in SUMMARY_COUNT.findall(run.summary):
            run.counts["errors" if outcome.startswith("error") else outcome] = int(number)
        return
    # No summary line (the run was cut off): count the outcomes seen so far.
    names = {"PASSED": "passed", "FAILED": "failed", "ERROR": "errors", "SKIPPED": "skipped"}
    names |= {"XFAIL": "xfailed", "XPASS": "xpassed", "RERUN": "rerun"}
    for outcome in run.outcomes.values():
        run.counts[names[outcome]] = run.counts.get(names[outcome], 0) + 1


def run_suite(
    suite: str,
    side: str,
    broker_url: str,
    redis_url: str,
    source: Path,
    args: argparse.Namespace,
    workdir: Path,
) -> Run:
    """`pytest t/integration/<suite>.py` from Celery's sdist, on `broker_url`."""
    import redis

    backend_url = (
        broker_url if side == KAFKAJOBS and args.result_backend == KAFKAJOBS else redis_url
    )
    log = workdir / f"{suite}-{side}.log"
    run = Run(suite, side, log=log)
    redis.Redis.from_url(redis_url, socket_timeout=5).flushall()
    host, port = redis_url.removeprefix("redis://").split("/")[0].rsplit(":", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_JOBS_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the URL says where the broker is
    env.update(
        TEST_BROKER=broker_url,
        TEST_BACKEND=backend_url,
        REDIS_HOST=host,
        REDIS_PORT=port,
        PYTHONDONTWRITEBYTECODE="1",  # nothing written into the cached sdist
        COLUMNS="250",  # longer failure messages in the short test summary
    )
    command = [
        *("timeout", "-k", "30", str(int(args.suite_timeout))),
        *(sys.executable, "-m", "pytest", f"t/integration/{suite}.py"),
        *("-p", "celery_bridge", "-v", "-rfE", "-p", "no:cacheprovider"),
        *("--durations", "0", "--durations-min", str(DURATION_MIN)),
        *("--timeout", str(int(args.test_timeout))),
        *(("-k", args.k) if args.k else ()),
    ]
    common.progress(
        f"{suite} on {SIDE_NAMES[side]} ({broker_url}, result backend {backend_url})"
        f" ... log: {run.log}"
    )
    started = time.monotonic()
    process = common.spawn(command, env, log, cwd=source)
    run.exit_code = process.wait()  # bounded by `timeout`, which kills the process group
    run.seconds = time.monotonic() - started
    parse_log(run, log.read_text(errors="replace"))
    if run.exit_code in (124, 137):
        run.error = f"cut off by the suite timeout ({args.suite_timeout:.0f} s)"
    elif not run.summary:
        run.error = f"pytest ended without a summary (exit code {run.exit_code})"
    common.progress(f"{suite} on {SIDE_NAMES[side]}: {describe(run)}")
    return run


def describe(run: Run) -> str:
    if not run.counts and run.error:
        return f"FAILED: {run.error}"
    text = ", ".join(f"{run.count(o)} {o}" for o in OUTCOMES if run.count(o))
    text = f"{text or 'no tests'} in {run.seconds:.0f} s"
    return f"{text} ({run.error})" if run.error else text


# --- the report ------------------------------------------------------------------------------


GENERAL_NOTES = [
    "each suite runs first on redis://, then on kafkajobs://, against the same Kafka broker"
    " and redis-server (flushed before each run); the broker is the only difference.",
    "counts are pytest's summary line; 'reruns' are the reruns of the tests Celery marks"
    " flaky (pytest-rerunfailures; test_tasks: up to 5 on OSError / ConnectionError /"
    " TimeoutError, test_revoked_by_headers_complex_canvas 2 on any failure; test_inspect:"
    " up to 5 on any failure, 2 s apart); a rerun that passed counts as passed.",
    "wall time is the whole pytest process, from start to exit: collection, Celery's session"
    " worker start-up (its ping check included) and shutdown.",
]

BACKEND_NOTE = (
    "each suite runs first on redis:// (broker and result backend), then on kafkajobs://"
    " (broker and result backend), against the same Kafka broker and redis-server (flushed"
    " before each run); tests Celery runs only on a Redis result backend are skipped on"
    " kafkajobs:// ('Requires redis result backend')."
)

HEADER = ["suite", "broker", "passed", "failed", "errors", "skipped", "reruns", "wall time"]


def table_rows(runs: list[Run]) -> list[list[str]]:
    rows = []
    for run in runs:
        if run.error and not run.counts:
            rows.append([run.suite, SIDE_NAMES[run.side], *(["-"] * 5), run.error])
            continue
        time_text = f"{run.seconds:.0f} s" + (" (cut off)" if run.error else "")
        rows.append(
            [run.suite, SIDE_NAMES[run.side]]
            + [str(run.count(o)) for o in ("passed", "failed", "errors", "skipped", "rerun")]
            + [time_text]
        )
    return rows


def by_suite(runs: list[Run]) -> dict[str, dict[str, Run]]:
    out: dict[str, dict[str, Run]] = {}
    for run in runs:
        out.setdefault(run.suite, {})[run.side] = run
    return out


def verdict(pair: dict[str, Run]) -> tuple[bool, str]:
    """(met, text): the issue 19 yardstick for one suite."""
    kj, rd = pair.get(KAFKAJOBS), pair.get(REDIS)
    if kj is None or rd is None or (kj.error and not kj.counts) or (rd.error and not rd.counts):
        return False, "not measured"
    ratio = kj.seconds / rd.seconds if rd.seconds else float("inf")
    fast = ratio < TIME_FACTOR
    redis_only = redis_backend_only(pair)
    if redis_only:
        # Celery's suite skips these on any other result backend: not a comparison.
        runnable = [t for t, o in rd.outcomes.items() if o == "PASSED" and t not in redis_only]
        passed = [t for t in runnable if kj.outcomes.get(t) in ("PASSED", "XPASS")]
        enough = len(passed) == len(runnable) and not kj.error
        counted = (
            f"passed {len(passed)} of the {len(runnable)} Redis passes a non-Redis result"
            f" backend can run ({len(redis_only)} need a Redis backend)"
        )
    else:
        enough = kj.count("passed") >= rd.count("passed") and not kj.error
        counted = f"passed {kj.count('passed')} vs {rd.count('passed')}"
    text = (
        f"{counted} ({'as many' if enough else 'fewer'}), time {ratio:.2f}x Redis"
        f" ({'<' if fast else '>='} {TIME_FACTOR}x): {'MET' if enough and fast else 'NOT MET'}"
    )
    return enough and fast, text


def redis_backend_only(pair: dict[str, Run]) -> set[str]:
    """Tests skipped on kafkajobs:// because they need a Redis (or rpc) result backend."""
    kj = pair.get(KAFKAJOBS)
    if kj is None:
        return set()
    return {
        test
        for test, outcome in kj.outcomes.items()
        if outcome == "SKIPPED" and "result backend" in kj.messages.get(test, "").lower()
    }


def differences(pair: dict[str, Run]) -> list[str]:
    """Lines naming the tests that fail (or error) on one broker and not the other."""
    out = []
    for side, other in ((KAFKAJOBS, REDIS), (REDIS, KAFKAJOBS)):
        run, base = pair.get(side), pair.get(other)
        if run is None or base is None:
            continue
        for test in run.failing():
            elsewhere = base.outcomes.get(test, "not run")
            if side == REDIS and elsewhere in ("FAILED", "ERROR"):
                continue  # listed in the kafkajobs:// pass
            message = run.messages.get(test, "")
            out.append(
                f"{SIDE_NAMES[side]} {run.outcomes[test]}, {SIDE_NAMES[other]}"
                f" {elsewhere}: `{test.split('::', 1)[1]}`"
                + (f" ({message[:240]})" if message else "")
            )
    return out


def redis_time(run: Run, key: str) -> str:
    seconds = run.durations.get(key)
    return f"< {DURATION_MIN} s" if seconds is None else f"{seconds:.1f} s"


def slower(pair: dict[str, Run]) -> list[str]:
    """The test phases that took longest beyond Redis's time on kafkajobs://."""
    kj, rd = pair.get(KAFKAJOBS), pair.get(REDIS)
    if kj is None or rd is None:
        return []
    extra = sorted(
        ((seconds - rd.durations.get(key, 0.0), key) for key, seconds in kj.durations.items()),
        reverse=True,
    )
    return [
        f"+{delta:.1f} s: {key.split(' ', 1)[0]} of `{key.split('::', 1)[1]}`"
        f" ({kj.durations[key]:.1f} s vs {redis_time(rd, key)})"
        for delta, key in extra[:SLOWER]
        if delta >= 1.0
    ]


def section_text(
    invocation: common.Invocation,
    load_average: str,
    kafka: common.BrokerHandle,
    redis_description: str,
    bridge: str,
    version: str,
    source: Path,
    dependencies: list[str],
    runs: list[Run],
    notes: list[str],
    args: argparse.Namespace,
    workdir: Path,
) -> str:
    out = [
        f"### On {kafka.name}",
        "",
        *common.report_head(invocation.command, invocation.date, load_average),
        f"- celery_bridge source: {bridge}",
        f"- Kafka broker: {kafka.description}",
        f"- Redis: {redis_description}; "
        + (
            "broker and result backend of the baseline; the kafkajobs:// run's result backend"
            " is kafkajobs:// (celery_bridge.backend, defaults)"
            if args.result_backend == KAFKAJOBS
            else "result backend of every run, broker of the baseline"
        ),
        f"- Celery's tests: t/integration of the celery {version} sdist from PyPI ({source})",
        f"- test dependencies: {', '.join(dependencies)}",
        f"- bounds: {args.suite_timeout:.0f} s per suite run, {args.test_timeout:.0f} s per"
        " test Celery did not mark" + (f"; tests selected with `-k {args.k}`" if args.k else ""),
        f"- logs: {workdir}",
        "",
        common.markdown_table(HEADER, table_rows(runs)),
        "",
        f"Issue 19's yardstick (as many passed as on Redis, in < {TIME_FACTOR}x its time):",
        "",
    ]
    for suite, pair in by_suite(runs).items():
        out.append(f"- {suite}: {verdict(pair)[1]}")
    out += ["", "Tests that fail on one broker only, or on both:", ""]
    listed = False
    for suite, pair in by_suite(runs).items():
        lines = differences(pair)
        out += [f"- {suite}: {line}" for line in lines]
        listed = listed or bool(lines)
    if not listed:
        out.append("- none")
    out += ["", "Where kafkajobs:// spent the most time beyond Redis (pytest --durations):", ""]
    lines = [
        f"- {suite}: {line}" for suite, pair in by_suite(runs).items() for line in slower(pair)
    ]
    out += lines or ["- nowhere more than 1 s"]
    general = GENERAL_NOTES
    if args.result_backend == KAFKAJOBS:
        general = [BACKEND_NOTE, *GENERAL_NOTES[1:]]
    out += common.notes_list([*general, *notes])
    return "\n".join(out)


def summary_cells(runs: list[Run], invocation: common.Invocation) -> list[list[str]]:
    cells = [["date", invocation.date], ["kafka-jobs source", common.source_state()]]
    for suite, pair in by_suite(runs).items():
        for side in (KAFKAJOBS, REDIS):
            run = pair.get(side)
            if run is None:
                continue
            cells.append([f"{suite} on {SIDE_NAMES[side]}", describe(run)])
        cells.append([f"{suite}: yardstick", verdict(pair)[1]])
    return cells


def ensure_section(path: Path, result_backend: str = REDIS) -> None:
    """The section and its (empty) blocks, before "Earlier runs", if the file lacks them."""
    if result_backend == KAFKAJOBS:
        common.ensure_section(
            path,
            BACKEND_SECTION,
            BACKEND_NAME,
            "Issue 20: Celery's own `t/integration` suites with `kafkajobs://` as both the"
            " broker and the result backend (`celery_bridge.backend`), both at their defaults"
            " (nothing but the URLs), against Redis as broker and result backend; see the"
            " docstring of `bench/celery_suite.py`. Goal: as many tests pass as with Redis."
            " Tests that Celery's suite runs only on a Redis result backend (it skips them"
            " otherwise) are listed as skipped.\n\n"
            "```\n"
            "python -m bench.celery_suite --broker embedded --result-backend kafkajobs"
            " --suites test_tasks,test_canvas --out bench/RESULTS.md\n"
            "python -m bench.celery_suite --broker apache --result-backend kafkajobs"
            " --suites test_tasks,test_canvas --out bench/RESULTS.md\n"
            "```\n\n",
        )
        return
    common.ensure_section(
        path,
        SECTION,
        NAME,
        "Celery's own `t/integration` suites (from the sdist of the installed Celery) with"
        " `kafkajobs://` as the broker at its defaults (nothing but the URL) and with Redis as"
        " the broker, Redis the result backend of both; see the docstring of"
        " `bench/celery_suite.py`. Issue 19's yardstick: as many tests pass on kafkajobs:// as"
        " on Redis, in less than 1.5 times Redis's time.\n\n"
        "```\n"
        "python -m bench.celery_suite --broker embedded --out bench/RESULTS.md\n"
        "python -m bench.celery_suite --broker apache --out bench/RESULTS.md\n"
        "```\n\n",
    )


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.arg_parser("bench.celery_suite", __doc__)
    parser.add_argument(
        "--suites",
        default="test_tasks,test_inspect",
        help="comma-separated modules of Celery's t/integration (default test_tasks,test_inspect)",
    )
    parser.add_argument("-k", default="", help="pytest -k expression selecting tests (a subset)")
    parser.add_argument(
        "--result-backend",
        choices=(REDIS, KAFKAJOBS),
        default=REDIS,
        help="result backend of the kafkajobs:// run (default redis; the baseline keeps Redis)",
    )
    common.add_options(
        parser,
        ("--suite-timeout", 1200.0, "seconds allowed per suite and broker (timeout -k 30)"),
        ("--test-timeout", 300.0, "pytest-timeout for tests Celery did not mark"),
        ("--logs", "", "directory for the pytest logs (default: a new one under /tmp, kept)"),
    )
    common.add_out_argument(parser, appends=False)
    args = parser.parse_args(argv)
    args.suites = [s.strip().removesuffix(".py") for s in args.suites.split(",") if s.strip()]
    if not args.suites:
        parser.error("--suites names no suite")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = common.begin("bench.celery_suite")
    bridge = bridge_state()
    version = celery_version()
    source = sdist(version)
    dependencies, missing = ensure_dependencies(source)
    notes = []
    suites = []
    for suite in args.suites:
        if not (source / "t" / "integration" / f"{suite}.py").exists():
            notes.append(f"{suite}: no t/integration/{suite}.py in Celery {version}; skipped")
        elif missing:
            notes.append(f"{suite}: skipped, test dependencies missing: {'; '.join(missing)}")
        else:
            suites.append(suite)
    workdir = Path(args.logs) if args.logs else Path(tempfile.mkdtemp(prefix="bench-celery-suite-"))
    workdir.mkdir(parents=True, exist_ok=True)
    common.progress(f"Celery {version} sdist at {source}; logs in {workdir}")
    runs: list[Run] = []
    with (
        common.broker(args.broker) as kafka,
        redis_server(None, workdir) as redis_handle,
    ):
        common.progress(f"Kafka broker: {kafka.description} at {kafka.bootstrap}")
        common.progress(f"Redis: {redis_handle.description}")
        brokers = {REDIS: redis_handle.url, KAFKAJOBS: kafka_url("kafkajobs", kafka.bootstrap)}
        for suite in suites:
            for side in (REDIS, KAFKAJOBS):
                try:
                    runs.append(
                        run_suite(
                            suite, side, brokers[side], redis_handle.url, source, args, workdir
                        )
                    )
                except Exception as exc:
                    runs.append(Run(suite, side, error=f"run failed: {exc!r}"))
                    common.progress(f"{suite} on {SIDE_NAMES[side]} failed: {exc!r}")
    load_average = invocation.load_average()
    print()
    print(f"Kafka broker: {kafka.description}")
    rows = [[f"{r[0]} on {r[1]}", *r[2:]] for r in table_rows(runs)]
    print(common.text_table(["", *HEADER[2:]], rows))
    print()
    for suite, pair in by_suite(runs).items():
        print(f"{suite}: {verdict(pair)[1]}")
        for line in differences(pair):
            print(f"  {line}")
    for note in notes:
        print(f"note: {note}")
    if str(args.out) != "-":
        ensure_section(args.out, args.result_backend)
    common.record_side_by_side(
        args.out,
        BACKEND_NAME if args.result_backend == KAFKAJOBS else NAME,
        kafka.kind,
        kafka.name,
        section_text(
            invocation,
            load_average,
            kafka,
            redis_handle.description,
            bridge,
            version,
            source,
            dependencies,
            runs,
            notes,
            args,
            workdir,
        ),
        summary_cells(runs, invocation),
    )
    met = all(verdict(pair)[0] for pair in by_suite(runs).values())
    return 0 if met and suites and not notes else 1


if __name__ == "__main__":
    sys.exit(main())
