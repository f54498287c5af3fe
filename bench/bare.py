"""The framework's ceiling: an aiohttp handler that reads the body and answers 204.

Run as ``python -m bench.bare PORT``; it serves ``POST /events`` on 127.0.0.1 only.
"""

from __future__ import annotations

import sys

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=204)


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="Ready.\n")


def main() -> None:
    app = web.Application(client_max_size=16 * 1024**2)
    app.router.add_post("/events", handle)
    app.router.add_get("/-/ready", ready)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
