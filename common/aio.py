"""A structured "first one wins" for tasks that only make sense together.

A WebSocket connection needs a sender and a receiver, and the service needs the server and
a watcher of the stop signal; whichever of them ends first ends the others. ``TaskGroup``
gives the ownership (nothing is left running, a crash propagates); the done callbacks give
the "first wins".
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def race(*coroutines: Coroutine[Any, Any, object]) -> None:
    """Run all until the first returns, then cancel and await the rest.

    A task that raises makes the group cancel the others and re-raise (as an
    ``ExceptionGroup``); a task cancelled by its sibling's completion is not an error.
    """
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(coroutine) for coroutine in coroutines]

        def cancel_others(finished: asyncio.Task[object]) -> None:
            for task in tasks:
                if task is not finished:
                    task.cancel()

        for task in tasks:
            task.add_done_callback(cancel_others)
