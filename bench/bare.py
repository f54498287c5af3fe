"""The framework's ceiling: an aiohttp handler that reads the body and answers as the exporter does.

Same status (200), same content type and a JSON body of the same size as the exporter's reply
to a delivery (``{"recorded": 1}``): a 204 without a body is cheaper to send, and comparing
against it flattered the ceiling (bare was ~1.3 x faster for that alone). The body is encoded
once: the ceiling is aiohttp reading a request and writing a reply, nothing else.

Run as ``python -m bench.bare PORT``; it serves ``POST /events`` on 127.0.0.1 only.
"""

from __future__ import annotations

import sys

from aiohttp import web

REPLY = b'{"recorded": 1}'


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=REPLY, content_type="application/json", charset="utf-8")


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="Ready.\n")


def main() -> None:
    app = web.Application(client_max_size=16 * 1024**2)
    app.router.add_post("/events", handle)
    app.router.add_get("/-/ready", ready)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
