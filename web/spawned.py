"""What every process the portal spawns runs first: uvicorn's server processes and the upload worker.

A spawned process is a fresh interpreter (review2 r2ops N1, N2): it has no log handler (its records would go
to logging.lastResort, unmasked and unformatted), a masking function that knows no secret, and a new execve
environment block that holds PGPASSWORD and AWS_* in the clear for every page worker it forks. One function,
so that no spawned entry point forgets a step."""

from __future__ import annotations

import logging


def start_spawned(settings, log_state: tuple[int, bool, int]) -> None:
    """Remember the settings' secrets for masking, set up the parent's logging (``log_state`` is
    :func:`pipelines.logs.snapshot` taken there) unless this process has it already (an in-process call),
    and zero the secrets' bytes in this process's environment block before it forks anything."""
    from digitize.config import remember_secrets
    from digitize.secrets import wipe_environ_block
    from pipelines import logs

    remember_secrets(settings)
    if not logging.getLogger().handlers:
        logs.restore(log_state)
    wipe_environ_block()
