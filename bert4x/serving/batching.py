"""Dynamic batching: concurrent requests' items share one model call.

Each request puts its items (texts, questions) on a queue and waits for their results. A
batcher takes the first waiting item, then whatever else arrives within a short window, up to a
maximum batch, and runs the batch function on the model thread. One model thread serves every
batcher: Keras models are not meant to be called from several threads at once, and on a CPU a
second thread would only compete for the same cores.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any, Callable, List, Optional, Sequence

import numpy as np


class ServerBusy(Exception):
    """More items waiting than the queue allows: the client should retry later (HTTP 429)."""


class DynamicBatcher:
    """``await batcher.submit(items)`` -> the batch function's results for those items, in order.

    ``function(items) -> results`` (same length) runs on ``executor``. ``on_batch(size,
    seconds)`` is told about every batch run, for metrics.
    """

    def __init__(self, name: str, function: Callable[[List[Any]], Sequence[Any]],
                 executor: concurrent.futures.Executor, max_batch: int = 32,
                 wait_seconds: float = 0.005, max_waiting: int = 4096,
                 on_batch: Optional[Callable[[int, float], None]] = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.name, self.function, self.executor = name, function, executor
        self.max_batch, self.wait_seconds, self.max_waiting = max_batch, wait_seconds, max_waiting
        self.on_batch = on_batch
        self._queue: Optional[asyncio.Queue] = None
        self._worker: Optional[asyncio.Task] = None

    @property
    def waiting(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._serve(), name=self.name)

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._worker is None:
            return
        await self._queue.join()
        self._worker.cancel()
        try:
            await self._worker
        except asyncio.CancelledError:
            pass
        self._worker = None

    async def submit(self, items: Sequence[Any]) -> List[Any]:
        if self._queue is None:
            raise RuntimeError(f"batcher {self.name!r} is not running")
        if self.waiting + len(items) > self.max_waiting:
            raise ServerBusy(f"{self.waiting} items are already waiting for {self.name!r} "
                             f"(at most {self.max_waiting})")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, future in zip(items, futures):
            self._queue.put_nowait((item, future))
        try:
            return list(await asyncio.gather(*futures))
        except asyncio.CancelledError:
            for future in futures:  # a timed-out request: its items need not run
                future.cancel()
            raise

    async def _next_batch(self) -> list:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            live = [(item, future) for item, future in batch if not future.done()]
            try:
                if live:
                    started = loop.time()
                    results = await loop.run_in_executor(
                        self.executor, self.function, [item for item, _ in live])
                    if len(results) != len(live):
                        raise RuntimeError(f"{self.name}: {len(results)} results for "
                                           f"{len(live)} items")
                    if self.on_batch is not None:
                        self.on_batch(len(live), loop.time() - started)
                    for (_, future), result in zip(live, results):
                        if not future.done():
                            future.set_result(result)
            except Exception as error:  # the requests fail (HTTP 500), the batcher lives on
                for _, future in live:
                    if not future.done():
                        future.set_exception(error)
            finally:
                for _ in batch:
                    self._queue.task_done()



def call_overhead_tokens(model, repeats: int = 3) -> float:
    """A model call's fixed cost in token-equivalents, measured on ``model`` (inputs: token
    ids, segment ids). From the fastest of ``repeats`` calls of a small (1 x 8) and a large
    (32 x 64) batch, cost = overhead + k x rows x length."""
    def seconds(rows, length):
        inputs = [np.ones((rows, length), "int32"), np.zeros((rows, length), "int32")]
        model.predict_on_batch(inputs)  # tracing for this shape
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.predict_on_batch(inputs)
            times.append(time.perf_counter() - started)
        return min(times)

    small, large = seconds(1, 8), seconds(32, 64)
    per_token = max(large - small, 1e-9) / (32 * 64 - 8)
    return max(small / per_token - 8, 0.0)
