"""The queue's job ledger in Redis: each job's state, its delivery count and its outcome.

Celery carries the messages; the ledger answers what Celery does not: "is this file done already?"
(job IDs are derived from the content and options, so a re-run enqueues nothing twice), "how often did
this task start without ever finishing?" (a poison file that kills its worker), and "what is waiting,
running, done, failed, and since when?" (``digitize queue status``, ``batch --wait``, the metrics).

Every write is one MULTI/EXEC transaction; the client retries on connection errors for a while, so a
broker restarted under a running job costs a pause, not the job's outcome.

Whoever can write Redis could show a job as done or failed, so every state change is sealed with the queue
secret (pipelines/taskauth.record_seal: the job ID, state, file name, SHA-256, reason and the result's
SHA-256; the write WATCHes the record, so the seal covers the fields as they end up). Every read verifies:
a record whose seal is missing or wrong (planted, altered, or written before ledger signing) comes back in
the state "unverified", with no result, never as done or failed. The delivery counters are sealed too (a
write sets them from the counts it read and verified, never from what it cannot verify), and a worker fails
a job as a poison file only on counts that verify (their own seal, ``counts_seal``: the record's ``seal`` stays
the one earlier versions read) and belong to the run it was sent. The times are not sealed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from digitize.errors import ConfigError, StorageError

log = logging.getLogger("pipelines.ledger")

PREFIX = "digitize:q:"
STATES = ("waiting", "running", "done", "failed")
TERMINAL = ("done", "failed")
UNVERIFIED = "unverified"  # a record whose seal does not verify: shown as that, never as its claimed state
UNVERIFIED_REASON = ("the queue ledger's record of this job is not signed with this queue's secret (planted or "
                     "altered in Redis, or written before ledger signing){claim}; `digitize queue retry JOB` sends "
                     "it again")
STALE_REASON = UNVERIFIED_REASON.format(claim="; it is another submission's state")  # an older run's record put back
CHUNK = 1000  # records read per round trip when many records are checked (queue status, batch --wait)
# HMGET of ARGV on every key, answered as one JSON array (null for a missing field): one reply per CHUNK jobs for
# the client to parse instead of one per job (redis-py's pure-Python parser spent ~0.1 ms CPU per record)
_FIELDS_LUA = """local out = {}
for i = 1, #KEYS do
  local values = redis.call('HMGET', KEYS[i], unpack(ARGV))
  for j = 1, #ARGV do
    if values[j] then out[#out + 1] = values[j] else out[#out + 1] = cjson.null end
  end
end
return cjson.encode(out)"""
_BEAT_LUA = """if redis.call('HGET', KEYS[1], 'state') == 'running' and redis.call('HGET', KEYS[1], 'worker') == ARGV[1]
  and (redis.call('HGET', KEYS[1], 'run') or '') == ARGV[2] then
  local now = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'heartbeat', string.format('%d.%06d', tonumber(now[1]), tonumber(now[2])))
  return 1
end
return 0"""
_SENT_LUA = """if redis.call('HGET', KEYS[1], 'state') and (redis.call('HGET', KEYS[1], 'run') or '') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'sent', '1')
  return 1
end
return 0"""
RECONNECT_SECONDS = 60.0  # how long a ledger call keeps retrying while Redis restarts
ENDS = f"{PREFIX}ends"  # bumped by every outcome: a waiter reads one number, not every pending job, to see a change
CHANGES = f"{PREFIX}changes"  # a stream of the jobs each write touched: the metrics re-read only those (LiveTally)
CHANGES_KEPT = 100_000  # about this many entries kept; a reader that fell further behind counts everything again
CHANGES_READ = 10_000  # at most this many entries read per scrape; more since the last: count everything again


class LeaseHeld(Exception):
    """Another delivery of the job runs under the same run and renewed its lease lately (Ledger.start's guard)."""

    def __init__(self, worker: str):
        super().__init__(f"job running on {worker or 'another worker'}")
        self.worker = worker


def new_run() -> str:
    """A submission's run ID: its issue time (nanoseconds, hex) and 64 random bits. Sealed with every record
    and signed in every task, so an older run's task or record put back is told from a newer one by its time
    (run_order; earlier versions' runs are random hex, without a time: not ordered)."""
    import secrets

    return f"{time.time_ns():x}.{secrets.token_hex(8)}"


def run_order(run: str) -> int | None:
    """A run ID's issue time, or None for one without (an earlier version's, or none)."""
    stamp, dot, nonce = str(run or "").partition(".")
    if not dot or not nonce or len(stamp) > 20:
        return None
    try:
        return int(stamp, 16)
    except ValueError:
        return None


def superseded(run: str, by: str) -> bool:
    """Whether RUN was issued before BY, both new-style (a replayed older task, a waiter's run re-sent since)."""
    first, second = run_order(run), run_order(by)
    return first is not None and second is not None and first < second


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
    claimed: str = ""  # an unverified record's own (untrusted) state
    run: str = ""  # the submission (Submitter.send's random ID, in the signed spec): an older run's record is stale
    counted: bool = False  # starts and ends are under the record's seal (not planted, not from before they were)
    heartbeat: float = 0.0  # when the running delivery last renewed its lease (Ledger.beat; not sealed, as times)
    sent: bool = False  # the run's task was published (Ledger.mark_sent, after the broker took it; not sealed)

    def last_seen(self) -> float:
        """The latest sign of life of the job's submission or delivery (enqueued, started, lease renewed)."""
        return max(self.enqueued, self.started, self.heartbeat)

    @property
    def crashes(self) -> int:
        """Deliveries that started and never ended: the worker died (or was killed) under them."""
        return max(0, self.starts - self.ends)

    def crashes_of(self, run: str) -> int:
        """The crashes a worker may act on for RUN's delivery: sealed counts of that very run, else none (a
        count planted in Redis, or an older run's sealed one put back, never fails a job)."""
        return self.crashes if self.counted and self.run == run else 0

    @classmethod
    def from_hash(cls, job: str, data: dict[str, str]) -> "JobRecord":
        def num(key: str, kind=float):
            try:
                return kind(data.get(key) or 0)
            except ValueError:
                return kind(0)

        return cls(job, data.get("state", ""), data.get("name", ""), data.get("sha256", ""), num("enqueued"),
                   num("started"), num("finished"), num("starts", int), num("ends", int), data.get("reason", ""),
                   data.get("worker", ""), _json(data.get("spec")), _json(data.get("result")),
                   data.get("signature", ""), run=data.get("run", ""), heartbeat=num("heartbeat"),
                   sent=data.get("sent") == "1")


def _json(text: str | None) -> dict[str, Any]:
    """A stored JSON object; planted bytes that are not one read as {} (never a reader's crash)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class QueueCounts:
    waiting: int
    running: int
    done: int
    failed: int
    oldest_waiting: float | None  # enqueue time (epoch seconds) of the longest-waiting job
    unverified: int = 0  # records whose seal does not verify (counted by Ledger.tally only)


def _seconds(text: Any) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def _clock(time_reply) -> float:
    """Redis TIME's (seconds, microseconds) as epoch seconds."""
    seconds, micros = time_reply
    return int(seconds) + int(micros) / 1_000_000


def _count(text: str) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


def _digest(text: str | None) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text else ""


def _identity(spec: dict[str, Any] | None) -> dict[str, str]:
    """What a worker's checked spec says the record is about (nothing without one: kept if sealed)."""
    return {} if spec is None else {"name": str(spec.get("name") or ""), "sha256": str(spec.get("sha256") or ""),
                                    "run": str(spec.get("run") or "")}


def _unverified_reason(claimed: str | None) -> str:
    return UNVERIFIED_REASON.format(claim=f"; it claims {claimed}" if claimed in STATES else "")


def state_url(queue) -> str:
    if not queue.url:
        raise ConfigError("no queue configured: set [queue] url (e.g. redis://HOST:6379/0)")
    url = queue.state_url or (queue.url if queue.url.startswith(("redis://", "rediss://")) else "")
    if not url:
        raise ConfigError("queue.state_url must name a Redis server when queue.url is not redis:// (the job ledger)")
    return url


class Ledger:
    """``key``: the queue secret (pipelines/taskauth.queue_secret), which seals every write and checks every read."""

    def __init__(self, url: str, key: bytes, reconnect: float = RECONNECT_SECONDS):
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.key = key
        attempts = max(1, int(reconnect / 2))
        self.redis = redis.Redis.from_url(
            url, decode_responses=True, encoding_errors="replace", socket_connect_timeout=5, socket_timeout=30, health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.2), attempts),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError])

    @classmethod
    def from_settings(cls, settings, reconnect: float = RECONNECT_SECONDS) -> "Ledger":
        from .taskauth import queue_secret

        return cls(state_url(settings.queue), queue_secret(settings), reconnect)

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
        except ValueError as e:  # planted bytes a reply parser refuses: a ledger fault, never a traceback
            raise StorageError(f"queue ledger: {what}: unreadable record ({type(e).__name__})") from None

    def _move(self, pipe, job: str, state: str, when: float, **fields: Any) -> None:
        for other in STATES:
            if other != state:
                pipe.zrem(self._state(other), job)
        pipe.zadd(self._state(state), {job: when})
        pipe.hset(self._job(job), mapping={"state": state, **{k: v for k, v in fields.items()}})

    def _sealed_move(self, job: str, state: str, when: float, fields: dict[str, Any], count: str = "",
                     after=None, guard=None, stamped: tuple[str, ...] = ()) -> list:
        """One state change with its seal, in one transaction that WATCHes the record. The sealed fields this
        write does not set are kept only from a record whose seal verifies (else emptied; the delivery counts
        only from one that seals them too and is of the run written, else 0): a write never signs what someone
        else put in Redis, nor carries an older run's counts into a new run's seal.
        ``count``: the delivery counter this write adds one to ("starts" or "ends"). A concurrent change
        retries the write. ``guard(kept, old)``: called with the verified fields (and all as read, the lease's
        ``heartbeat`` and ``worker`` too, and ``now``: Redis's clock) before anything is written; it may raise to
        write nothing. ``stamped``: fields set to Redis's clock (the state set's score too), not the caller's."""
        from .taskauth import SEALED, counts_seal, counts_sealed, record_seal, record_sealed

        key = self._job(job)
        if "result" in fields:
            fields = {**fields, "result_sha256": _digest(fields["result"])}

        def write(pipe):
            names = ("seal", "counts_seal", "heartbeat", "worker", *SEALED)
            old = dict(zip(names, pipe.hmget(key, *names)))
            now, values = when, fields
            if stamped:
                now = _clock(pipe.time())
                values = {**fields, **dict.fromkeys(stamped, now)}
            old["now"] = now
            kept = old if record_sealed(self.key, job, old, old["seal"]) else {}
            if guard is not None:
                guard(kept, old)
            if kept and not counts_sealed(self.key, job, old, old["counts_seal"]):
                kept = {**kept, "starts": "", "ends": ""}
            if "run" in fields and str(fields["run"]) != (kept.get("run") or ""):
                kept = {**kept, "starts": "", "ends": ""}  # another run's counts (a replay) are never this run's
            record = {**{k: kept.get(k) or "" for k in SEALED}, **{k: str(values[k]) for k in SEALED if k in values},
                      "state": state}
            if count:
                record[count] = str(_count(record[count]) + 1)
            pipe.multi()
            written = {k: v for k, v in {**record, **values}.items() if k != "state"}
            self._move(pipe, job, state, now, **written, seal=record_seal(self.key, job, record),
                       counts_seal=counts_seal(self.key, job, record))
            if after:
                after(pipe)
        replies = self.redis.transaction(write, key)
        self._note_change(job)
        return replies

    def _note_change(self, job: str) -> None:
        """The change log's entry for a write, after it and outside its transaction, best effort: the log
        only speeds the gauges up (they re-read every record within MetricsCollector.RECHECK), so an entry
        that cannot be added (an entry planted with the highest ID, a key of another type) fails no write."""
        import redis

        try:
            self.redis.xadd(CHANGES, {"job": job}, maxlen=CHANGES_KEPT, approximate=True)
        except (redis.RedisError, ValueError) as e:
            log.warning("queue ledger: the change log missed job %s (%s); the gauges catch up at their next full count",
                        job, type(e).__name__)

    def _fields(self, jobs: list[str], names: tuple[str, ...]) -> list[dict[str, str]]:
        """The fields NAMES of each job's record (a missing one left out), CHUNK jobs per round trip."""
        script = self.redis.register_script(_FIELDS_LUA)
        found: list[dict[str, str]] = []
        for start in range(0, len(jobs), CHUNK):
            chunk = jobs[start:start + CHUNK]
            flat = json.loads(script(keys=[self._job(job) for job in chunk], args=list(names)))
            found += [{k: v for k, v in zip(names, flat[n:n + len(names)]) if v is not None}
                      for n in range(0, len(flat), len(names))]
        return found

    def _verified(self, job: str, data: dict[str, str], result: bool = True) -> bool:
        """Whether the record's seal is this key's, and (``result``: the caller read it) its result the one
        sealed: a result deleted from a sealed record fails too (its digest was sealed)."""
        from .taskauth import record_sealed

        if not record_sealed(self.key, job, data, data.get("seal")):
            return False
        return not result or _digest(data.get("result")) == (data.get("result_sha256") or "")

    def _record(self, job: str, data: dict[str, str]) -> JobRecord:
        """A record as read: unverified, it shows none of its claims but the (untrusted) spec `queue retry`
        checks with its own signature before sending it again (nor are its counts ``counted``)."""
        from .taskauth import counts_sealed

        if self._verified(job, data):
            return dataclasses.replace(JobRecord.from_hash(job, data),
                                       counted=counts_sealed(self.key, job, data, data.get("counts_seal")))
        claimed = data.get("state", "")
        safe = {k: v for k, v in data.items() if k not in ("state", "reason", "result")}
        return dataclasses.replace(JobRecord.from_hash(job, safe), state=UNVERIFIED, reason=_unverified_reason(claimed),
                                   claimed=claimed if claimed in STATES else "")

    # -- writes --------------------------------------------------------------------------------
    def enqueued(self, job: str, name: str, sha256: str, spec: dict[str, Any], batch: str = "",
                 signature: str = "") -> None:
        """A (re)submitted job waits again, with a fresh delivery count (after a fix, or a re-run), under the
        spec's run ID (Submitter.send makes one per submission)."""
        def run():
            now = time.time()
            self._sealed_move(job, "waiting", now, dict(
                name=name, sha256=sha256, run=str(spec.get("run") or ""), enqueued=now, started=0, finished=0, starts=0, ends=0,
                reason="", worker="", heartbeat=0, sent=0,
                spec=json.dumps(spec), result="", signature=signature),
                after=(lambda pipe: pipe.sadd(f"{PREFIX}batch:{batch}", job)) if batch else None, stamped=("enqueued",))
        self._call(run, f"recording job {job}")

    def mark_sent(self, job: str, run: str) -> bool:
        """The broker took RUN's task: the record is flagged ``sent`` (if it is still RUN's), and only then may
        another submission follow it instead of sending it again (Submitter._live: a record whose publish was
        refused, or whose submitter died before publishing, was followed and its file reported queued with no task
        ever sent: review rev2_batch16a MEDIUM-1). Whether it was."""
        script = self.redis.register_script(_SENT_LUA)
        return bool(self._call(lambda: script(keys=[self._job(job)], args=[run]), f"recording job {job} as sent"))

    def unsent(self, job: str, run: str, reason: str, result: dict[str, Any] | None = None) -> bool:
        """RUN's task was refused by the broker: its waiting record is failed with REASON (shown, and `queue
        retry` sends it again), unless another submission has recorded the job since (left alone). Whether it
        was."""
        class Moved(Exception):
            pass

        def guard(kept: dict[str, Any], old: dict[str, Any]) -> None:
            if kept.get("state") != "waiting" or (kept.get("run") or "") != run:
                raise Moved

        def write():
            now = time.time()
            self._sealed_move(job, "failed", now, dict(reason=reason, finished=now, result=json.dumps(result or {})),
                              after=lambda pipe: (pipe.incr(ENDS), pipe.publish(ENDS, job)), guard=guard)
        try:
            self._call(write, f"failing job {job}")
        except Moved:
            return False
        return True

    def start(self, job: str, worker: str, spec: dict[str, Any] | None = None, lease: float = 0.0,
              dead: str = "", counted: bool = True) -> JobRecord:
        """A delivery begins: counted before any work, so a delivery that kills the worker is remembered.
        ``spec``: the task's (checked, signed) spec, whose name, SHA-256 and run the record takes; its reason
        and result start empty. ``lease``: the delivery takes the job only if no other delivery of the same
        run renewed its lease (:meth:`beat`) in the last LEASE seconds, else LeaseHeld and nothing is written
        (``dead``: a holder known dead, its worker process gone, whose lease is taken over at once).
        ``counted``: False for a delivery resuming its own process's earlier one (not a new start)."""
        run_id = _identity(spec).get("run", "")

        def guard(kept: dict[str, Any], old: dict[str, Any]) -> None:
            if not lease or kept.get("state") != "running" or (kept.get("run") or "") != run_id:
                return
            holder = str(old.get("worker") or "")
            if holder != dead and old["now"] - _seconds(old.get("heartbeat")) < lease:  # one clock: Redis's
                raise LeaseHeld(holder)

        def run():
            now = time.time()
            data = self._sealed_move(job, "running", now, dict(started=now, heartbeat=now, worker=worker, reason="",
                                                               result="", **_identity(spec)),
                                     count="starts" if counted else "",
                                     after=lambda pipe: pipe.hgetall(self._job(job)), guard=guard,
                                     stamped=("started", "heartbeat"))[-1]
            return self._record(job, data)
        return self._call(run, f"starting job {job}")

    def clock(self) -> float:
        """Redis's time (epoch seconds): the one clock of leases and enqueue times, which each machine's own would
        make a worker running ahead take over live deliveries (review rev2_batch16a LOW-2)."""
        return self._call(lambda: _clock(self.redis.time()), "reading the ledger's clock")

    def beat(self, job: str, worker: str, run: str) -> bool:
        """The running delivery renews its lease: the record's ``heartbeat`` set to now (Redis's clock) if it is
        still running under this worker and run (a job taken over or ended since is left alone); whether it was."""
        script = self.redis.register_script(_BEAT_LUA)
        return bool(self._call(lambda: script(keys=[self._job(job)], args=[worker, run]),
                               f"renewing job {job}'s lease"))

    def end(self, job: str, state: str, reason: str = "", result: dict[str, Any] | None = None,
            spec: dict[str, Any] | None = None) -> None:
        """An outcome: ``done``/``failed`` (terminal) or ``waiting`` (a retry is scheduled). ``spec``: as start's."""
        def run():
            now = time.time()
            extra = {"finished": now, "result": json.dumps(result)} if state in TERMINAL else {"result": ""}
            self._sealed_move(job, state, now, dict(reason=reason, **extra, **_identity(spec)), count="ends",
                              after=lambda pipe: (pipe.incr(ENDS), pipe.publish(ENDS, job)))  # published at EXEC, after the record: a waiter wakes and reads it
        self._call(run, f"finishing job {job}")

    def release(self, job: str, worker: str, run: str, reason: str) -> bool:
        """A delivery that raised after its start gives the job back: waiting again with REASON and its start
        matched by an end (not a crash), only if it is still running under this worker and run (a record ended
        or taken over since is left alone). Whether it was."""
        class Moved(Exception):
            pass

        def guard(kept: dict[str, Any], old: dict[str, Any]) -> None:
            if kept.get("state") != "running" or old.get("worker") != worker or (kept.get("run") or "") != run:
                raise Moved

        try:
            self._call(lambda: self._sealed_move(job, "waiting", time.time(), dict(reason=reason, result=""),
                                                 count="ends", guard=guard), f"releasing job {job}")
        except Moved:
            return False
        return True

    def add_to_batch(self, batch: str, job: str) -> None:
        self._call(lambda: self.redis.sadd(f"{PREFIX}batch:{batch}", job), "recording a batch")

    def fail(self, job: str, reason: str, result: dict[str, Any] | None = None,
             spec: dict[str, Any] | None = None) -> None:
        """Terminal failure without a matching start (the poison check refuses a delivery). ``spec``: as start's
        (none: a refused task's, which is not trusted: name and SHA-256 only from a record that verifies)."""
        def run():
            now = time.time()
            self._sealed_move(job, "failed", now, dict(reason=reason, finished=now, result=json.dumps(result or {}),
                                                       **_identity(spec)),
                              after=lambda pipe: (pipe.incr(ENDS), pipe.publish(ENDS, job)))
        self._call(run, f"failing job {job}")

    # -- reads ---------------------------------------------------------------------------------
    def get(self, job: str) -> JobRecord | None:
        data = self._call(lambda: self.redis.hgetall(self._job(job)), f"reading job {job}")
        return self._record(job, data) if data else None

    def many(self, jobs: Iterable[str]) -> list[JobRecord]:
        jobs = list(jobs)

        def run():
            pipe = self.redis.pipeline()
            for job in jobs:
                pipe.hgetall(self._job(job))
            return pipe.execute()
        return [self._record(j, d) for j, d in zip(jobs, self._call(run, "reading jobs")) if d]

    def ends(self) -> int:
        """How many outcomes were recorded so far (any job): unchanged means no job ended since the last look."""
        return int(self._call(lambda: self.redis.get(ENDS), "reading the outcome count") or 0)

    def end_notices(self) -> "EndNotices":
        """A subscription to outcome notices: a waiter sleeps until a job ends instead of polling."""
        return self._call(lambda: EndNotices(self.redis), "subscribing to outcomes")

    def outcomes(self, jobs: Iterable[str], runs: dict[str, str] | None = None) -> dict[str, tuple[str, dict[str, Any]]]:
        """The jobs among JOBS that came to an outcome: done or failed, with their result (not their specs: a
        waiter reads this for every pending job when something ended). A record whose seal does not verify,
        whatever state it claims, or (``runs``: job -> the run ID this waiter submitted) that belongs to
        another submission (an older signed state put back) is ("unverified", {"reason": ...}): an outcome
        too, never a done one, so a waiter never waits forever on a record someone rewrote."""
        from .taskauth import SEALED

        jobs, runs = list(jobs), runs or {}
        found = {}  # one read of every pending record's short fields; a pending record's result is empty
        for job, data in zip(jobs, self._call(lambda: self._fields(jobs, ("result", "seal", *SEALED)),
                                              "reading jobs")):
            if not data:
                continue  # not recorded (yet): still pending
            own, recorded = runs.get(job), data.get("run", "")
            stale = own is not None and recorded != own and not superseded(own, recorded)  # a newer run: followed
            if stale or not self._verified(job, data):
                found[job] = (UNVERIFIED, {"reason": STALE_REASON if stale else _unverified_reason(data.get("state"))})
            elif data.get("state") in TERMINAL and (result := _json(data.get("result"))):
                found[job] = (data["state"], result)
        return found

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

    def _listed(self) -> dict[str, tuple[str, float]]:
        """Every job in a state set: job -> (the set, its score)."""
        def members():
            pipe = self.redis.pipeline(transaction=False)
            for state in STATES:
                pipe.zrange(self._state(state), 0, -1, withscores=True)
            return pipe.execute()
        return {job: (state, when) for state, found in zip(STATES, self._call(members, "listing jobs"))
                for job, when in found}

    def _verified_states(self, jobs: list[str]) -> list[str | None]:
        """Each job's state if its record verifies, else UNVERIFIED (None: no record), reading only its short
        sealed fields (not its spec or result), CHUNK per call."""
        from .taskauth import SEALED

        states: list[str | None] = []
        for job, data in zip(jobs, self._call(lambda: self._fields(jobs, ("seal", *SEALED)), "reading jobs")):
            state = data.get("state") if self._verified(job, data, result=False) else UNVERIFIED
            states.append(None if not data else state if state in STATES else UNVERIFIED)
        return states

    def tally(self) -> QueueCounts:
        """Counts from every record's verified state (what `queue status` shows), records that do not verify
        counted as unverified. :meth:`counts` counts the state sets' members without reading a record
        (unverified); :meth:`follow` keeps a tally up to date reading only what was written since."""
        listed = self._listed()
        tally, oldest = dict.fromkeys((*STATES, UNVERIFIED), 0), None
        for (job, (listed_state, when)), state in zip(listed.items(), self._verified_states(list(listed))):
            tally[state or UNVERIFIED] += 1
            if state == "waiting" and listed_state == "waiting":
                oldest = min(oldest or when, when)
        return QueueCounts(tally["waiting"], tally["running"], tally["done"], tally["failed"], oldest,
                           tally[UNVERIFIED])

    def follow(self, live: "LiveTally") -> QueueCounts:
        """``live`` brought up to date and its counts (the metrics' scrapes): the first call reads every record
        (as :meth:`tally`), later ones only the jobs written since (the CHANGES stream, whose IDs Redis assigns,
        so no machine's clock matters), or everything again if the stream no longer reaches back to where
        ``live`` stopped or holds CHANGES_READ entries or more since (a scrape's read is bounded by the
        jobs, never by entries planted in the log). Oldest waiting: not followed (None)."""
        import redis

        def position(first: bool) -> str:
            found = self.redis.xrange(CHANGES, count=1) if first else self.redis.xrevrange(CHANGES, count=1)
            return found[0][0] if found else ""

        try:
            if live.last:
                oldest_kept = self._call(lambda: position(True), "reading the change log")
                if oldest_kept and _stream_id(oldest_kept) > _stream_id(live.last):
                    live.reset()  # entries between were trimmed (or the log was deleted): count everything
            if not live.last:
                live.reset()
                live.last = self._call(lambda: position(False), "reading the change log") or "0-0"
                listed = list(self._listed())
                live.update(listed, [state or UNVERIFIED for state in self._verified_states(listed)])
            else:
                entries = self._call(lambda: self.redis.xrange(CHANGES, min=f"({live.last}", count=CHANGES_READ),
                                     "reading the change log")
                if len(entries) >= CHANGES_READ:  # a flood (planted entries?): the full count is bounded by the jobs
                    live.reset()
                    return self.follow(live)
                if entries:
                    jobs = list(dict.fromkeys(str(fields.get("job", "")) for _, fields in entries))
                    live.update(jobs, self._verified_states(jobs))
                    live.last = entries[-1][0]
        except (StorageError, redis.RedisError):
            live.reset()
            raise
        counts = live.counts
        return QueueCounts(counts["waiting"], counts["running"], counts["done"], counts["failed"], None,
                           counts[UNVERIFIED])


def _stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = str(text).partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


@dataclass
class LiveTally:
    """A reader's verified state of every job, kept up to date by Ledger.follow: job -> state, the counts by
    state, and the last change-log entry read."""

    states: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*STATES, UNVERIFIED), 0))
    last: str = ""

    def reset(self) -> None:
        self.states.clear()
        self.counts = dict.fromkeys((*STATES, UNVERIFIED), 0)
        self.last = ""

    def update(self, jobs: list[str], states: list[str | None]) -> None:
        for job, state in zip(jobs, states):
            before = self.states.pop(job, None)
            if before is not None:
                self.counts[before] -= 1
            if state is not None:
                self.states[job] = state
                self.counts[state] += 1


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
