"""CPU work off the event loop: decoding uploads and parsing v2 bodies run in a pool of their own.

Sized to the CPU limit (``Settings.decoding_threads``), so the event loop keeps accepting connections
and the model keeps running while photos are decoded. ``0`` threads means Starlette's shared pool.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from seedlings.serving.errors import Overloaded


class Offload:
    """``await offload.run(fn, *args)``: ``fn(*args)`` in the pool; after ``shutdown``, 503 shutting_down."""

    def __init__(self, threads: int):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="seedlings-decode") if threads \
            else None
        self._stopped = False

    async def run(self, fn, *args):
        if self._pool is None:
            from starlette.concurrency import run_in_threadpool  # lazy: only with --decode-threads 0

            return await run_in_threadpool(fn, *args)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except RuntimeError:  # the pool refuses new work once shut down
            if not self._stopped:
                raise
            raise Overloaded(1, "shutting_down", "the server is shutting down") from None

    def shutdown(self) -> None:
        self._stopped = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
