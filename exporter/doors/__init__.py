"""What the doors that read by themselves (the REST poller, the Kinesis consumer) share: their shape and how they run.

Each is a transport and a reader handing raw items to ``Pipeline.deliver``; the application runs
it as a background task between its start and its stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol


class Door(Protocol):
    """A door that reads by itself: started, run, stopped."""

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


def background_context(door: Door, name: str) -> Callable[[Any], AsyncIterator[None]]:
    """A ``cleanup_ctx`` running ``door`` as a background task while the application runs.

    Added after the state's context, so the state is loaded before the door's first read and the
    door's last delivery is committed before the state closes. Startup does not wait for a read:
    a slow or failing source never delays readiness.
    """

    async def context(_: Any) -> AsyncIterator[None]:
        await door.start()
        task = asyncio.create_task(door.run(), name=name)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await door.stop()

    return context
