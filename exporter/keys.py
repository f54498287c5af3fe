"""Typed application state keys (``web.AppKey``), one place for all of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .app import Runtime

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
