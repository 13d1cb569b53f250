"""Queue task signatures: a worker runs only tasks made by a holder of the queue secret.

Every machine of queue mode shares the broker, and whoever can write to it (a Redis without a password, a
leaked broker URL, a compromised watch machine's network) could otherwise send a task naming any staged
object, any conversion options and any sender for an upload (whose rights decide where its parts are
filed). So each task's payload, the job ID and its spec (what the worker acts on), is signed with
HMAC-SHA256 under a key shared by the submitting and the working machines, and a worker refuses a task
whose signature is missing or wrong: failed with the reason, never run, never retried. The ledger keeps
each job's signature beside its spec, and ``digitize queue retry`` re-sends only a spec that still verifies
(the ledger lives in Redis too).

Why the standard library's :mod:`hmac` over a canonical JSON and not Celery's ``security`` serializer: that
one signs with an X.509 key and certificate per producer and needs a certificate store on every worker, a
PKI to run for a job that one shared secret (like the webhook key) does; nor itsdangerous: its timestamped
tokens add nothing here (a replayed task is harmless: jobs are idempotent by the ID the signature covers)
for one more dependency.

The same key seals the ledger's state records (:func:`record_seal`): whoever can write Redis could otherwise
show a job as done or failed to ``queue status``, ``batch --wait`` and the portal. Each state change writes an
HMAC over the job ID and the fields it shows (state, file name, SHA-256, reason, the result's SHA-256) and
the submission's run ID (random, made by Submitter.send and in the signed task spec: an older sealed state of
the same job put back in Redis is told from the current run's); readers that cannot verify one report the
job as "unverified", never as done. Its delivery counts (``starts`` and ``ends``: a worker fails a job that
stopped its worker ``max_deliveries`` times, so they must not be forgeable either) have a seal of their own
(``counts_seal``, over the job, run and counts), so the record's ``seal`` stays what earlier versions write
and verify (a rolling upgrade's old readers still see "done"); a record whose counts' seal is missing or
stale (written by an earlier version, or altered) still verifies, but its counts do not
(:func:`counts_sealed`): no job is failed on them.

The secret comes from ``[queue] secret`` / ``DIGITIZE_QUEUE_SECRET``, ``[queue] secret_file`` or the
systemd credential ``$CREDENTIALS_DIRECTORY/digitize-queue-secret``; it is registered with the one masking
function (digitize.secrets) as soon as it is read, and is never put in a message, argv or log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from digitize import secrets
from digitize.errors import ConfigError, DigitizeError, ExitCode

PURPOSE = "digitize.queue.task.v1"  # domain separation: a webhook's or another version's MAC never matches
RECORD_PURPOSE = "digitize.queue.ledger.v2"  # a task's MAC is never a ledger record's, nor the reverse
COUNTS_PURPOSE = "digitize.queue.counts.v1"  # the delivery counts' own seal (``counts_seal``)
SEALED = ("state", "name", "sha256", "reason", "result_sha256", "run", "starts", "ends")  # what the seals cover
RECORD_SEALED = SEALED[:6]  # the record's ``seal``: as every earlier version seals it, so they all read it
COUNTED = ("run", "starts", "ends")  # the ``counts_seal``: written only by versions that act on the counts
LEGACY_RECORD_PURPOSE, LEGACY_SEALED = RECORD_PURPOSE, RECORD_SEALED  # what versions before the counts' seal wrote
VERSION = "v1="
CREDENTIAL_NAME = "digitize-queue-secret"
MIN_SECRET = 32
HOW = ("put the same random value of 32 or more characters (e.g. `openssl rand -base64 32`) on every machine "
       "in DIGITIZE_QUEUE_SECRET, [queue] secret_file (a file of mode 0600) or the systemd credential "
       f"{CREDENTIAL_NAME}")


class UnsignedTask(DigitizeError):
    """A task message that no holder of the queue secret made (unsigned, or signed with another key)."""

    exit_code = ExitCode.bad_args


def queue_secret(settings) -> bytes:
    """The key that signs and checks tasks; ConfigError (one line, saying how to set it) if none, too short or
    not random-looking. Its file is read as digitize.secrets.read_secret_file reads every key file."""
    cfg = settings.queue
    value = secrets.load_secret(cfg.secret, cfg.secret_file, CREDENTIAL_NAME, "queue secret", HOW, MIN_SECRET)
    if not value:
        raise ConfigError(f"queue mode needs a secret to sign its tasks: {HOW}")
    return value.encode("utf-8")


def _canonical(job: Any, spec: Any) -> bytes:
    return json.dumps([PURPOSE, job, spec], sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def sign(key: bytes, job: str, spec: dict[str, Any]) -> str:
    return VERSION + hmac.new(key, _canonical(job, spec), hashlib.sha256).hexdigest()


def verify(key: bytes, job: Any, spec: Any, signature: Any) -> None:
    """Return if ``signature`` is this key's over (job, spec) as received; else UnsignedTask saying which."""
    if not signature:
        raise UnsignedTask("the task is not signed (sent by something without the queue secret, or by a version "
                           "before task signing)")
    try:
        expected = sign(key, job, spec)
    except (TypeError, ValueError):
        raise UnsignedTask("the task's payload is not plain JSON; it cannot have been signed") from None
    if not isinstance(signature, str) or not hmac.compare_digest(expected.encode(), signature.encode("utf-8",
                                                                                                       "replace")):
        raise UnsignedTask("the task's signature does not match this machine's queue secret (forged, altered, or "
                           "the secret differs between machines)")


def record_seal(key: bytes, job: str, fields: dict[str, Any], purpose: str = RECORD_PURPOSE,
                names: tuple[str, ...] = RECORD_SEALED) -> str:
    """The seal of a ledger record: HMAC-SHA256 over the job ID and its RECORD_SEALED fields (missing ones as "")."""
    canon = json.dumps([purpose, str(job), *(str(fields.get(name) or "") for name in names)],
                       separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return VERSION + hmac.new(key, canon, hashlib.sha256).hexdigest()


def counts_seal(key: bytes, job: str, fields: dict[str, Any]) -> str:
    """The seal of a record's delivery counts, apart from its ``seal`` (which older versions write and read
    unchanged): HMAC-SHA256 over the job ID, its run and its counts."""
    return record_seal(key, job, fields, COUNTS_PURPOSE, COUNTED)


def _matches(expected: str, seal: Any) -> bool:
    return isinstance(seal, str) and hmac.compare_digest(expected.encode(), seal.encode("utf-8", "replace"))


def counts_sealed(key: bytes, job: str, fields: dict[str, Any], seal: Any) -> bool:
    """Whether SEAL (a record's ``counts_seal``) is this key's over (JOB, FIELDS' run and counts) as read back;
    a version that does not seal the counts leaves an older one, which then no longer matches."""
    return _matches(counts_seal(key, job, fields), seal)


def record_sealed(key: bytes, job: str, fields: dict[str, Any], seal: Any) -> bool:
    """Whether SEAL is this key's seal over (JOB, FIELDS) as read back (the counts are :func:`counts_sealed`'s)."""
    return _matches(record_seal(key, job, fields), seal)
