"""The process pool's replies: what a child sends back for a job that raised, and what arrives.

`_run_in_child` and `decode_reply` are the two ends of the pipe; here they run in
one process, without a child, so only the encoding is under test.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import dill

from kafka_jobs import Retry, Settings, current_job, deadletter
from kafka_jobs.processing.processes import RemoteJobError, _run_in_child, decode_reply
from kafka_jobs.processing.retry import final_error

PID = 4242


class TwoArguments(Exception):
    """Pickles, but does not unpickle: its `__init__` wants two arguments, `args` holds one."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def _reply(fn: Callable[[], object]) -> BaseException | tuple[object]:
    """Run `fn` as the child would (attempt 1 of a job), decode the reply as the parent does."""
    tasks = SimpleNamespace(task=lambda name: SimpleNamespace(fn=fn))
    fields = {
        "task": "t",
        "job_id": "id",
        "topic": "jobs",
        "partition": 0,
        "offset": 7,
        "attempt": 1,
        "key": None,
        "headers": {},
    }
    request = dill.dumps(("t", (), {}, fields, None))
    return decode_reply(_run_in_child(tasks, Settings(), request), PID)  # type: ignore[arg-type]


def test_current_job_retry_in_a_child_comes_back_as_the_same_retry() -> None:
    def job() -> None:
        current_job().retry(countdown=2.5, exc=KeyError("k"), max_retries=4)

    error = _reply(job)
    assert isinstance(error, Retry)
    assert (error.countdown, error.max_retries) == (2.5, 4)
    assert isinstance(error.exc, KeyError) and error.exc.args == ("k",)


def test_a_retry_whose_exc_cannot_travel_is_still_a_retry() -> None:
    def job() -> None:
        raise Retry(countdown=3, exc=TwoArguments(1, 2), max_retries=2)

    error = _reply(job)
    # Before: the whole Retry became a RemoteJobError, so the job failed under its
    # ordinary policy, without the countdown or max_retries it asked for.
    assert isinstance(error, Retry)
    assert (error.countdown, error.max_retries) == (3, 2)
    assert isinstance(error.exc, RemoteJobError)
    assert str(error.exc) == "TwoArguments: 1/2"


def test_a_retry_s_exc_carries_where_the_child_failed() -> None:
    def job() -> None:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError as caught:
            raise Retry(countdown=1, exc=caught) from None

    error = _reply(job)
    assert isinstance(error, Retry) and isinstance(error.exc, ZeroDivisionError)
    # A dead letter shows the exc once no attempt is left: it says where it was raised.
    notes = getattr(error.exc, "__notes__", [])
    assert len(notes) == 1 and notes[0].startswith(f"raised in worker process {PID}:")
    assert "1 / 0" in notes[0]  # the exc's own traceback, not only the retry's


def test_an_exhausted_retry_without_exc_says_where_the_child_asked_it() -> None:
    def job() -> None:
        current_job().retry(countdown=1)

    error = _reply(job)
    assert isinstance(error, Retry)
    text = deadletter.format_traceback(final_error(error, 4))
    assert "MaxRetriesExceeded: gave up after 4 attempts" in text
    assert f"raised in worker process {PID}:" in text and "current_job().retry" in text


def test_an_error_that_cannot_travel_comes_back_as_text() -> None:
    def job() -> None:
        raise TwoArguments(3, 4)

    error = _reply(job)
    assert isinstance(error, RemoteJobError) and str(error) == "TwoArguments: 3/4"
    assert "raised in worker process 4242" in error.__notes__[0]
