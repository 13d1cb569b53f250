"""CPU per request of web/crosssite.py CrossSiteArrivals (review web16 L3) in front of a trivial ASGI app, in
process (on demand, never CI): an ordinary same-site request with its cookie (what every page pays: a header
scan) and a cross-site one without it (the send wrapper that drops the session cookie).

    .venv/bin/python bench/crosssite_bench.py [--calls 20000] [--rounds 5]

Bare and wrapped alternate round by round; the figure is the median of the rounds' process CPU per request.
Read the added microseconds beside a case view's ~1500 us (bench/request_task_bench.py), not the absolute
numbers. Seconds; nothing to cache.
"""
import argparse
import asyncio
import sys
import time

from web.crosssite import CrossSiteArrivals

EXTRA = [(b"x-%d" % i, b"v") for i in range(10)]  # a browser's other headers, scanned too
SCOPES = {
    "same-site with cookie": {"type": "http", "method": "GET", "path": "/cases/x", "query_string": b"",
                              "headers": [(b"host", b"p"), (b"cookie", b"digitize_session=abc"),
                                          (b"sec-fetch-site", b"same-origin"), *EXTRA]},
    "cross-site download, no cookie": {"type": "http", "method": "GET", "path": "/cases/x/documents/1/pdfa",
                                       "query_string": b"", "headers": [(b"host", b"p"),
                                                                        (b"sec-fetch-site", b"cross-site"),
                                                                        (b"sec-fetch-mode", b"navigate"), *EXTRA]}}


async def inner(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"set-cookie", b"digitize_session=x")]})
    await send({"type": "http.response.body", "body": b""})


async def sink(message):
    pass


async def run(app, scope, n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        await app(scope, None, sink)
    return (time.process_time() - started) / n * 1e6


async def main(n: int, rounds: int) -> None:
    wrapped = CrossSiteArrivals(inner, session_cookie="digitize_session", skip_prefix="/login/oidc")
    print("| request | bare us | with us | added us |\n|---|---:|---:|---:|")
    for name, scope in SCOPES.items():
        bare, withm = [], []
        for _ in range(rounds):
            bare.append(await run(inner, scope, n))
            withm.append(await run(wrapped, scope, n))
        b, w = sorted(bare)[rounds // 2], sorted(withm)[rounds // 2]
        print(f"| {name} | {b:.2f} | {w:.2f} | {w - b:.2f} |")
    print(f"\ncommand: {' '.join([sys.executable, *sys.argv])}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
