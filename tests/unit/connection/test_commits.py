"""The commit path's bookkeeping: what is sent again, what is forgotten (a fake client)."""

from __future__ import annotations

from typing import cast

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from kafka_jobs.connection.client import Client, Mark
from kafka_jobs.connection.commits import Committer


class FakeClient:
    """Records commits; fails the next one when asked (pure logic under test, no broker)."""

    def __init__(self) -> None:
        self.sent: list[tuple[list[Mark], bool]] = []
        self.fail_next = False

    def commit(self, marks: list[Mark], asynchronous: bool) -> list[TopicPartition] | None:
        if self.fail_next:
            self.fail_next = False
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        self.sent.append((list(marks), asynchronous))
        return None if asynchronous else [mark.partition() for mark in marks]


def committer() -> tuple[Committer, FakeClient, list[list[TopicPartition]]]:
    heard: list[list[TopicPartition]] = []
    commits = Committer("g", heard.append)
    fake = FakeClient()
    commits.client = cast(Client, fake)
    return commits, fake, heard


def test_asynchronous_commits_skip_marks_already_sent() -> None:
    commits, fake, _ = committer()
    assert commits.commit([Mark(("t", 0), 5)], asynchronous=True) == [Mark(("t", 0), 5)]
    assert commits.commit([Mark(("t", 0), 5), Mark(("t", 1), 2)], asynchronous=True) == [
        Mark(("t", 1), 2)
    ]
    assert [marks for marks, _ in fake.sent] == [[Mark(("t", 0), 5)], [Mark(("t", 1), 2)]]


def test_a_failed_asynchronous_commit_is_sent_again() -> None:
    commits, fake, _ = committer()
    commits.commit([Mark(("t", 0), 5)], asynchronous=True)
    failed = TopicPartition("t", 0, 5)
    commits.handle_result(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), [failed])
    assert commits.committed(("t", 0)) is None
    assert commits.commit([Mark(("t", 0), 5)], asynchronous=True) == [Mark(("t", 0), 5)]
    assert len(fake.sent) == 2


def test_a_commit_that_cannot_be_sent_reports_none_and_forgets() -> None:
    commits, fake, _ = committer()
    fake.fail_next = True
    assert commits.commit([Mark(("t", 0), 5)], asynchronous=True) is None
    assert commits.committed(("t", 0)) is None


def test_synchronous_commits_send_everything_again_and_report_acceptance() -> None:
    commits, fake, heard = committer()
    commits.commit([Mark(("t", 0), 5)], asynchronous=True)
    assert commits.commit([Mark(("t", 0), 5)], asynchronous=False) == [Mark(("t", 0), 5)]
    assert fake.sent[-1] == ([Mark(("t", 0), 5)], False)
    assert [[(tp.topic, tp.partition, tp.offset) for tp in batch] for batch in heard] == [
        [("t", 0, 5)]
    ]
    assert commits.committed(("t", 0)) == 5
