"""The queue's job ledger in Redis: each job's state, its delivery count and its outcome.

Celery carries the messages; the ledger answers what Celery does not: "is this file done already?"
(job IDs are derived from the content and options, so a re-run enqueues nothing twice), "how often did
this task start without ever finishing?" (a poison file that kills its worker), and "what is waiting,
running, done, failed, and since when?" (``digitize queue status``, ``batch --wait``, the metrics).

Every write is one MULTI/EXEC transaction; the client retries on connection errors for a while, so a
broker restarted under a running job costs a pause, not the job's outcome.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from digitize.errors import ConfigError, StorageError

PREFIX = "digitize:q:"
STATES = ("waiting", "running", "done", "failed")
TERMINAL = ("done", "failed")
RECONNECT_SECONDS = 60.0  # how long a ledger call keeps retrying while Redis restarts
ENDS = f"{PREFIX}ends"  # bumped by every outcome: a waiter reads one number, not every pending job, to see a change


def job_id(original_sha256: str, source_pages: str, options: dict[str, Any]) -> str:
    """The idempotency key: the same bytes, pages and conversion options are the same job."""
    canon = json.dumps({"sha256": original_sha256, "pages": source_pages, "options": options}, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()[:32]


@dataclass
class JobRecord:
    job_id: str
    state: str
    name: str = ""  # the file's path relative to the inbox or batch folder (shown, and a metadata clue)
    sha256: str = ""
    enqueued: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    starts: int = 0  # deliveries that began converting
    ends: int = 0  # deliveries that came to an outcome (success, failure or a scheduled retry)
    reason: str = ""
    worker: str = ""
    spec: dict[str, Any] = field(default_factory=dict)  # the task message, for `queue retry`
    result: dict[str, Any] = field(default_factory=dict)  # JobResult.to_dict() once terminal
    signature: str = ""  # the spec's HMAC (pipelines/taskauth.py): `queue retry` re-sends only a spec it verifies

    @property
    def crashes(self) -> int:
        """Deliveries that started and never ended: the worker died (or was killed) under them."""
        return max(0, self.starts - self.ends)

    @classmethod
    def from_hash(cls, job: str, data: dict[str, str]) -> "JobRecord":
        def num(key: str, kind=float):
            try:
                return kind(data.get(key) or 0)
            except ValueError:
                return kind(0)

        return cls(job, data.get("state", ""), data.get("name", ""), data.get("sha256", ""), num("enqueued"),
                   num("started"), num("finished"), num("starts", int), num("ends", int), data.get("reason", ""),
                   data.get("worker", ""), json.loads(data.get("spec") or "{}"), json.loads(data.get("result") or "{}"),
                   data.get("signature", ""))


@dataclass
class QueueCounts:
    waiting: int
    running: int
    done: int
    failed: int
    oldest_waiting: float | None  # enqueue time (epoch seconds) of the longest-waiting job


def state_url(queue) -> str:
    if not queue.url:
        raise ConfigError("no queue configured: set [queue] url (e.g. redis://HOST:6379/0)")
    url = queue.state_url or (queue.url if queue.url.startswith(("redis://", "rediss://")) else "")
    if not url:
        raise ConfigError("queue.state_url must name a Redis server when queue.url is not redis:// (the job ledger)")
    return url


class Ledger:
    def __init__(self, url: str, reconnect: float = RECONNECT_SECONDS):
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        attempts = max(1, int(reconnect / 2))
        self.redis = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=5, socket_timeout=30, health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.2), attempts),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError])

    @classmethod
    def from_settings(cls, settings, reconnect: float = RECONNECT_SECONDS) -> "Ledger":
        return cls(state_url(settings.queue), reconnect)

    def close(self) -> None:
        self.redis.close()

    # -- keys ----------------------------------------------------------------------------------
    @staticmethod
    def _job(job: str) -> str:
        return f"{PREFIX}job:{job}"

    @staticmethod
    def _state(state: str) -> str:
        return f"{PREFIX}state:{state}"

    def _call(self, fn, what: str):
        import redis

        try:
            return fn()
        except redis.RedisError as e:
            raise StorageError(f"queue ledger: {what}: {type(e).__name__}: {e}") from e

    def _move(self, pipe, job: str, state: str, when: float, **fields: Any) -> None:
        for other in STATES:
            if other != state:
                pipe.zrem(self._state(other), job)
        pipe.zadd(self._state(state), {job: when})
        pipe.hset(self._job(job), mapping={"state": state, **{k: v for k, v in fields.items()}})

    # -- writes --------------------------------------------------------------------------------
    def enqueued(self, job: str, name: str, sha256: str, spec: dict[str, Any], batch: str = "",
                 signature: str = "") -> None:
        """A (re)submitted job waits again, with a fresh delivery count (after a fix, or a re-run)."""
        def run():
            now = time.time()
            pipe = self.redis.pipeline()
            self._move(pipe, job, "waiting", now, name=name, sha256=sha256, enqueued=now, started=0, finished=0,
                       starts=0, ends=0, reason="", worker="", spec=json.dumps(spec), result="",
                       signature=signature)
            if batch:
                pipe.sadd(f"{PREFIX}batch:{batch}", job)
            pipe.execute()
        self._call(run, f"recording job {job}")

    def start(self, job: str, worker: str) -> JobRecord:
        """A delivery begins: counted before any work, so a delivery that kills the worker is remembered."""
        def run():
            pipe = self.redis.pipeline()
            pipe.hincrby(self._job(job), "starts", 1)
            self._move(pipe, job, "running", time.time(), started=time.time(), worker=worker)
            pipe.hgetall(self._job(job))
            return JobRecord.from_hash(job, pipe.execute()[-1])
        return self._call(run, f"starting job {job}")

    def end(self, job: str, state: str, reason: str = "", result: dict[str, Any] | None = None) -> None:
        """An outcome: ``done``/``failed`` (terminal) or ``waiting`` (a retry is scheduled)."""
        def run():
            now = time.time()
            pipe = self.redis.pipeline()
            pipe.hincrby(self._job(job), "ends", 1)
            extra = {"finished": now, "result": json.dumps(result)} if state in TERMINAL else {}
            self._move(pipe, job, state, now, reason=reason, **extra)
            pipe.incr(ENDS)
            pipe.publish(ENDS, job)  # delivered at EXEC, after the record: a waiter wakes and reads it
            pipe.execute()
        self._call(run, f"finishing job {job}")

    def add_to_batch(self, batch: str, job: str) -> None:
        self._call(lambda: self.redis.sadd(f"{PREFIX}batch:{batch}", job), "recording a batch")

    def fail(self, job: str, reason: str, result: dict[str, Any] | None = None) -> None:
        """Terminal failure without a matching start (the poison check refuses a delivery)."""
        def run():
            now = time.time()
            pipe = self.redis.pipeline()
            self._move(pipe, job, "failed", now, reason=reason, finished=now, result=json.dumps(result or {}))
            pipe.incr(ENDS)
            pipe.publish(ENDS, job)
            pipe.execute()
        self._call(run, f"failing job {job}")

    # -- reads ---------------------------------------------------------------------------------
    def get(self, job: str) -> JobRecord | None:
        data = self._call(lambda: self.redis.hgetall(self._job(job)), f"reading job {job}")
        return JobRecord.from_hash(job, data) if data else None

    def many(self, jobs: Iterable[str]) -> list[JobRecord]:
        jobs = list(jobs)

        def run():
            pipe = self.redis.pipeline()
            for job in jobs:
                pipe.hgetall(self._job(job))
            return pipe.execute()
        return [JobRecord.from_hash(j, d) for j, d in zip(jobs, self._call(run, "reading jobs")) if d]

    def ends(self) -> int:
        """How many outcomes were recorded so far (any job): unchanged means no job ended since the last look."""
        return int(self._call(lambda: self.redis.get(ENDS), "reading the outcome count") or 0)

    def end_notices(self) -> "EndNotices":
        """A subscription to outcome notices: a waiter sleeps until a job ends instead of polling."""
        return self._call(lambda: EndNotices(self.redis), "subscribing to outcomes")

    def outcomes(self, jobs: Iterable[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """The jobs among JOBS that are done or failed: their state and result (not their specs: a waiter
        reads this for every pending job when something ended)."""
        jobs = list(jobs)

        def run():
            pipe = self.redis.pipeline(transaction=False)
            for job in jobs:
                pipe.hmget(self._job(job), "state", "result")
            return pipe.execute()
        found = {job: (state, json.loads(result or "{}")) for job, (state, result) in
                 zip(jobs, self._call(run, "reading jobs")) if state in TERMINAL}
        return {job: outcome for job, outcome in found.items() if outcome[1]}

    def in_state(self, state: str) -> list[str]:
        return self._call(lambda: self.redis.zrange(self._state(state), 0, -1), f"listing {state} jobs")

    def batch_jobs(self, batch: str) -> list[str]:
        return sorted(self._call(lambda: self.redis.smembers(f"{PREFIX}batch:{batch}"), "listing a batch"))

    def counts(self) -> QueueCounts:
        def run():
            pipe = self.redis.pipeline()
            for state in STATES:
                pipe.zcard(self._state(state))
            pipe.zrange(self._state("waiting"), 0, 0, withscores=True)
            return pipe.execute()
        *sizes, oldest = self._call(run, "counting jobs")
        return QueueCounts(*sizes, oldest[0][1] if oldest else None)


class EndNotices:
    """The job IDs :meth:`Ledger.end` and :meth:`Ledger.fail` publish (Redis pub/sub). A notice is not kept for
    a waiter that was not listening (a Redis restart, a worker of an older version): the waiter still reads
    every pending outcome now and then; the notices only make it learn of an end at once, without polling."""

    def __init__(self, client):
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(ENDS)

    def wait(self, timeout: float) -> set[str]:
        """The jobs that ended, waiting up to TIMEOUT seconds for the first (empty: none came)."""
        import redis

        heard: set[str] = set()
        deadline = time.monotonic() + timeout
        try:
            while not heard and (left := deadline - time.monotonic()) > 0:
                message = self.pubsub.get_message(timeout=left)  # None too for the subscription's confirmation
                while message is not None and len(heard) < 10_000:  # then those already here, without waiting
                    if message.get("type") == "message":
                        heard.add(str(message["data"]))
                    message = self.pubsub.get_message(timeout=0.0)
        except redis.RedisError as e:
            raise StorageError(f"queue ledger: waiting for outcomes: {type(e).__name__}: {e}") from e
        return heard

    def close(self) -> None:
        self.pubsub.close()
