"""Where a request's time goes inside a saturated ``digitize serve`` (used by bench/portal_phases.py).

Run as the server's main script (``python bench/portal_probe.py serve --port N``, with PYTHONPATH at the
code tree under test and DIGITIZE_PROBE_DIR set): uvicorn spawns its workers, which import this file again
as ``__mp_main__``, so every worker installs the same probes. Each request gets a record (one JSON line in
DIGITIZE_PROBE_DIR/<pid>.jsonl) of perf_counter stamps, all in ms from the moment uvicorn parsed it:

    app      the request's task started (its wait for a turn of the event loop)
    submit   the route handed to the thread pool (FastAPI's run_in_threadpool)
    thread   a worker thread started it (the hop's wait: a free thread and the GIL)
    ret      the route returned in that thread
    back     the event loop resumed the request after the hop
    cwait    the answer's start began waiting for its access events' commit (web/events.py)
    cdone    the writer thread had committed them (its INSERT returned, before it wakes the loop)
    cback    the request resumed after its commit (the loop turns of the wake-up in between)
    start    the status line was handed to the transport
    body     the last body piece was handed to the transport (``buffered``: bytes the socket did not take)
    drained  the transport's buffer was empty (``turns``: loop turns until then)

plus one ``loop`` line a second per worker: how long one turn of its event loop took (``sleep(0)``).
Only probes: nothing here changes what the server answers. Not for production use.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import json
import os
import sys
import threading
import time

OUT = os.environ.get("DIGITIZE_PROBE_DIR")
now = time.perf_counter
RECORD: contextvars.ContextVar[dict | None] = contextvars.ContextVar("probe_record", default=None)
_lines: list[str] = []
_lock = threading.Lock()


def _emit(obj: dict) -> None:
    with _lock:
        _lines.append(json.dumps(obj))
        if len(_lines) >= 200:
            _flush_locked()


def _flush_locked() -> None:
    if _lines and OUT:
        with open(os.path.join(OUT, f"{os.getpid()}.jsonl"), "a") as f:
            f.write("\n".join(_lines) + "\n")
        _lines.clear()


def _flush() -> None:
    with _lock:
        _flush_locked()


def _stamp(name: str) -> None:
    rec = RECORD.get()
    if rec is not None and name not in rec:
        rec[name] = now()


def install() -> None:
    import fastapi.routing
    from uvicorn.protocols.http import httptools_impl

    import web.events as events

    atexit.register(_flush)
    threading.Thread(target=_flusher, daemon=True).start()

    cycle = httptools_impl.RequestResponseCycle
    orig_init, orig_run, orig_send = cycle.__init__, cycle.run_asgi, cycle.send

    def init(self, *a, **k):
        orig_init(self, *a, **k)
        self._probe_t0 = now()

    async def run_asgi(self, app):
        rec = {"t0": self._probe_t0, "app": now(), "path": self.scope["path"]}
        RECORD.set(rec)
        _loop_lag_task()
        if os.environ.get("DIGITIZE_PROBE_THREADS"):  # try another thread limit (anyio's default: 40)
            import anyio.to_thread

            anyio.to_thread.current_default_thread_limiter().total_tokens = int(os.environ["DIGITIZE_PROBE_THREADS"])
        try:
            return await orig_run(self, app)
        finally:
            _finish(self, rec)

    async def send(self, message):
        rec = RECORD.get()
        await orig_send(self, message)
        if rec is None:
            return
        if message["type"] == "http.response.start":
            rec["start"] = now()
            rec["status"] = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            rec["body"] = now()
            rec["buffered"] = self.transport.get_write_buffer_size() if not self.transport.is_closing() else 0
            rec["bytes"] = rec.get("bytes", 0) + len(message.get("body", b""))
            if rec["buffered"]:
                _watch_drain(self.transport, rec)
            else:
                rec["drained"], rec["turns"] = rec["body"], 0
        elif message["type"] == "http.response.body":
            rec["bytes"] = rec.get("bytes", 0) + len(message.get("body", b""))

    cycle.__init__, cycle.run_asgi, cycle.send = init, run_asgi, send

    orig_pool = fastapi.routing.run_in_threadpool

    async def run_in_threadpool(func, *args, **kwargs):
        rec = RECORD.get()
        if rec is None or "submit" in rec:
            return await orig_pool(func, *args, **kwargs)
        rec["submit"] = now()

        def timed(*a, **k):
            rec["thread"] = now()
            try:
                return func(*a, **k)
            finally:
                rec["ret"] = now()

        try:
            return await orig_pool(timed, *args, **kwargs)
        finally:
            rec["back"] = now()

    fastapi.routing.run_in_threadpool = run_in_threadpool

    orig_committed = events.RequestEvents.committed

    async def committed(self):  # the code under test's own wait, timed around (never replaced)
        rec = RECORD.get()
        queued = [id(e) for _b, e in self.queued] if rec is not None and self.batches else []
        if queued:
            rec["cwait"] = now()
        try:
            return await orig_committed(self)
        finally:
            if queued:
                rec["cback"] = now()
                ends = [_EVENT_DONE.pop(i, None) for i in queued]
                if all(t is not None for t in ends):
                    rec["cdone"] = max(rec["cwait"], *ends)

    events.RequestEvents.committed = committed
    orig_run_writer = events.EventWriter._run

    import web.app as webapp
    import web.context as context

    orig_open_gate, orig_take = webapp._open_gate, context.ArchivePool.take
    orig_fast = context.ArchivePool.take_if_none_waits

    def open_gate(*a, **k):  # the access dependency's hop (token or archive not at hand on the loop; since
        # the merge with pool15 also the principal's lookup with an archive taken on the loop)
        _stamp("gthread")
        try:
            return orig_open_gate(*a, **k)
        finally:
            _stamp("gready")

    def stamped(func):  # an archive in hand in the hop: taken (waited for), or opened in its reserved slot
        def call(self):
            try:
                return func(self)
            finally:
                _stamp("garch")
        return call

    take = stamped(orig_take)

    def take_if_none_waits(self):  # main before the loop-side wait: the fast path's try
        _stamp("gate")
        return orig_fast(self)

    orig_waiting = getattr(context.ArchivePool, "take_waiting", None)

    async def take_waiting(self):  # since the loop-side wait: free, or waited for on the loop
        _stamp("gate")
        try:
            return await orig_waiting(self)
        finally:
            _stamp("gloop")

    webapp._open_gate, context.ArchivePool.take = open_gate, take
    context.ArchivePool.take_if_none_waits = take_if_none_waits
    if orig_waiting is not None:
        context.ArchivePool.take_waiting = take_waiting
    if hasattr(context.ArchivePool, "open_reserved"):  # since the merge with pool15: a slot reserved on the loop
        context.ArchivePool.open_reserved = stamped(context.ArchivePool.open_reserved)

    def run_writer(self):
        orig_open = self.open_index

        def open_index():
            index = orig_open()
            orig_add = index.add_events

            def add_events(evs):
                t = now()
                try:
                    return orig_add(evs)
                finally:
                    end = now()
                    for e in evs:  # when each request's events were committed (the writer's INSERT returned)
                        _EVENT_DONE[id(e)] = end
                    if len(_EVENT_DONE) > 20_000:  # of requests that never waited (cleared, not leaked)
                        _EVENT_DONE.clear()
                    _emit({"commit": [t, end, len(evs)]})

            index.add_events = add_events
            return index

        self.open_index = open_index
        return orig_run_writer(self)

    events.EventWriter._run = run_writer


_EVENT_DONE: dict[int, float] = {}  # id(event) -> when the writer's INSERT of it returned


def _finish(cycle, rec: dict) -> None:
    def done():
        t0 = rec.pop("t0")
        out = {"path": rec.pop("path"), "status": rec.pop("status", 0), "bytes": rec.pop("bytes", 0),
               "buffered": rec.pop("buffered", 0), "turns": rec.pop("turns", None)}
        out.update({k: round((v - t0) * 1000, 3) for k, v in rec.items() if isinstance(v, float)})
        _emit(out)

    if "drained" in rec or "body" not in rec:
        done()
    else:
        rec["_done"] = done


def _watch_drain(transport, rec: dict) -> None:
    loop = asyncio.get_running_loop()
    rec["turns"] = 0

    def poll():
        rec["turns"] += 1
        if transport.get_write_buffer_size() == 0 or transport.is_closing():
            rec["drained"] = now()
            finish = rec.pop("_done", None)
            if finish:
                finish()
        else:
            loop.call_soon(poll)

    loop.call_soon(poll)


_lag_started = False


def _loop_lag_task() -> None:
    global _lag_started
    if _lag_started:
        return
    _lag_started = True

    async def lag():
        turns = []
        last = now()
        while True:
            t = now()
            await asyncio.sleep(0)
            turns.append(now() - t)
            if now() - last >= 1.0:
                turns.sort()
                _emit({"loop": [round(turns[len(turns) // 2] * 1000, 3),
                                round(turns[int(len(turns) * 0.95)] * 1000, 3), len(turns)]})
                turns, last = [], now()
            await asyncio.sleep(0.005)

    asyncio.get_running_loop().create_task(lag())


def _flusher() -> None:
    while True:
        time.sleep(1.0)
        _flush()


if OUT:
    install()
    if os.environ.get("DIGITIZE_PROBE_POOL"):  # try another archive pool size
        import web.context

        web.context.ArchivePool.__init__.__defaults__ = (int(os.environ["DIGITIZE_PROBE_POOL"]),)
    if os.environ.get("DIGITIZE_PROBE_SWITCH"):  # try another GIL switch interval (seconds)
        sys.setswitchinterval(float(os.environ["DIGITIZE_PROBE_SWITCH"]))

if __name__ == "__main__":
    from digitize.launcher import main

    sys.exit(main(sys.argv[1:]))
