"""Bounded retries: transient errors are retried with growing delays, then one StorageError."""

import pytest

from digitize.errors import StorageError
from storage.retry import RetryPolicy, retrying


def test_delays_double_and_are_capped():
    assert RetryPolicy(attempts=5, base_delay=1, max_delay=3).delays() == [1, 2, 3, 3]


def test_gives_up_after_the_policy_with_a_storage_error():
    calls, slept = [], []

    def failing():
        calls.append(1)
        raise ConnectionError("refused")

    with pytest.raises(StorageError, match="upload failed after 3 attempts: ConnectionError: refused"):
        retrying(failing, "upload", RetryPolicy(attempts=3), lambda e: True, sleep=slept.append)
    assert len(calls) == 3 and slept == [0.2, 0.4]


def test_recovers_when_a_retry_succeeds_and_does_not_retry_permanent_errors():
    attempts = iter([ConnectionError("x"), "ok"])

    def flaky():
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert retrying(flaky, "x", RetryPolicy(), lambda e: isinstance(e, ConnectionError), sleep=lambda s: None) == "ok"
    with pytest.raises(ValueError):
        retrying(lambda: (_ for _ in ()).throw(ValueError("no")), "x", RetryPolicy(), lambda e: False)
