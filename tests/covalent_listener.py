"""The dispatcher's side of an executor's message queues, for tests that call ``execute()`` directly.

Covalent's dispatcher answers an executor's ``set_job_handle`` / ``get_cancel_requested`` messages
in ``covalent_dispatcher/_core/runner_modules/executor_proxy.py`` (backed by its database). This is
the same protocol over the same queues, with the answers kept in memory so that a test can read the
recorded job handle and request a cancel. Tests through a real Covalent server use the real one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from covalent.executor.utils import Signals


class Listener:
    """Answers an executor's messages in order, as Covalent's dispatcher does.

    ``slow(seconds, for_seconds)`` makes it answer each message ``seconds`` late during the next
    ``for_seconds`` (a busy dispatcher: Covalent's executors give up waiting after 5 s).
    """

    def __init__(self, executor: Any):
        self.executor = executor
        self.job_handles: list[Any] = []
        self.cancel_requested = False
        self.messages = 0
        self._delay, self._slow_until = 0.0, 0.0
        executor._init_runtime(loop=asyncio.get_running_loop())
        self._task = asyncio.create_task(self._watch())

    def slow(self, seconds: float, for_seconds: float) -> None:
        self._delay, self._slow_until = seconds, asyncio.get_running_loop().time() + for_seconds

    async def _watch(self) -> None:
        send, recv = self.executor._send_queue, self.executor._recv_queue
        while True:
            action, body = await send.get()
            if action == Signals.EXIT:
                return
            self.messages += 1
            if asyncio.get_running_loop().time() < self._slow_until:
                await asyncio.sleep(self._delay)
            if action == Signals.GET and body == "cancel_requested":
                recv.put_nowait((True, self.cancel_requested))
            elif action == Signals.GET and body == "version_info":
                recv.put_nowait((True, {}))
            elif action == Signals.PUT and body[0] == "job_handle":
                self.job_handles.append(json.loads(body[1]))
                recv.put_nowait((True, True))
            elif action == Signals.PUT:
                recv.put_nowait((True, True))
            else:
                recv.put_nowait((False, None))

    async def close(self) -> None:
        if not self._task.done():
            self._task.cancel()
