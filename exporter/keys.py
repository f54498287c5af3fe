"""Typed application state keys (``web.AppKey``), one place for all of them."""

from __future__ import annotations

from aiohttp import web

from exporter.runtime import Runtime

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
