"""The model behind the service, with micro-batching.

Why batch: ONNX Runtime classifies 16 images in less than 16× the time of one, so when
requests arrive together we run them together. Requests put images on a queue; one worker
task takes up to ``max_batch`` of them and runs them as one batch.

When a batch closes:

* at once when it is full;
* at once when its first image arrived while the model was idle (``idle_dispatch``, the
  default): a lone request never waits for company that may not come, which on a CPU costs
  more latency than batching saves (a batch of 16 is only ~10–15 % cheaper per image there);
* otherwise, i.e. for images that queued while a batch was in flight, when the model is free
  and ``max_wait_ms`` has passed since the batch's *first* image was queued (or it is full).
  A request that already waited for the busy model does not wait again once that time is up.

With ``idle_dispatch`` off every batch waits up to ``max_wait_ms`` from its first image (what
accelerators, where batches are nearly free, prefer). The model runs in a thread so the event
loop keeps accepting and decoding uploads meanwhile. A full queue is refused at once
(503 + Retry-After) rather than left to time out.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from seedlings.artifact import ModelFileError
from seedlings.errors import SeedlingsError
from seedlings.inference import Model, resolve_model_dir
from seedlings.serving.errors import InferenceTimeout, Overloaded
from seedlings.serving.metrics import Metrics
from seedlings.serving.modelcheck import check_model_dir, check_model_files, check_outputs
from seedlings.serving.settings import Settings

log = logging.getLogger("seedlings.serving")
TTA_VIEWS = 8  # the quarter turns and flips of a top-down photo (inference.Model.assess with tta)


@dataclass
class _Item:
    image: np.ndarray
    tta: bool
    future: asyncio.Future
    queued_at: float
    model_busy: bool  # a batch was in flight when this image was queued


def _expire(items: list[_Item], seconds: float) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(InferenceTimeout(f"no answer within {seconds:g}s"))


class Predictor:
    """A loaded :class:`~seedlings.inference.Model` plus the micro-batching queue in front of it."""

    def __init__(self, model: Model, settings: Settings, metrics: Metrics):
        self.model = model
        self.settings = settings
        self.metrics = metrics
        self.max_batch = settings.max_batch if settings.batching else 1
        self.max_wait = settings.max_wait_ms / 1000 if settings.batching else 0.0
        self.idle_dispatch = settings.idle_dispatch
        self.ready = False
        self._stopped = False
        self._busy = False  # a batch is being collected after a busy spell, or running
        self._queue: deque[_Item] = deque()
        self._load = 0  # queue places taken: an image is 1, a TTA image TTA_VIEWS
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        # One inference at a time: ONNX Runtime already spreads one run over all its threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seedlings-infer")
        self._batch_seconds = 0.05  # running estimate of one batch's time, for Retry-After

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics) -> Predictor:
        """Load the model with ONNX Runtime only: the service never falls back to torch."""
        model_dir = resolve_model_dir(settings.model_dir)
        file, path = check_model_files(model_dir, settings.precision)  # the same checks as `serve` at start…
        try:
            model = Model(model_dir, backend="onnx", spinning=False, precision=settings.precision,
                          threads=settings.inference_threads(), max_pixels=settings.max_pixels)
        except SeedlingsError:
            raise
        except Exception as exc:  # ONNX Runtime's own errors: say it as the start-up check does
            check_model_dir(model_dir, settings.precision)  # raises the one-line error
            raise ModelFileError(f"{path}: ONNX Runtime cannot load it ({exc}); re-export the model") from exc
        check_outputs(model.backend.session, path, file)  # …on the session it will serve with
        return cls(model, settings, metrics)

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Warm up (first runs allocate memory and pick kernels), then start taking requests."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        await loop.run_in_executor(self._executor, self._warm_up)
        self._arrived = asyncio.Event()
        self._worker = asyncio.create_task(self._run_forever(), name="seedlings-batcher")
        self.ready = True
        self.metrics.ready.set(1)
        log.info("model %s %s (%s, %s) warmed in %.2fs; batching: max %d images, wait %.1f ms%s",
                 self.model.name, self.model.version, self.model.backend_name, self.model.precision,
                 time.perf_counter() - started, self.max_batch, self.max_wait * 1000,
                 " while busy" if self.idle_dispatch else "")

    def _warm_up(self) -> None:
        size = self.model.spec.image_size
        # Batch 1 only: on ONNX Runtime's CPU provider a first batch of 16 takes as long as the next one (0.33 s
        # both, measured), so warming it would only delay readiness, i.e. a scaled-from-zero pod's first answer.
        self.model.probabilities(np.zeros((1, size, size, 3), np.uint8), tta=False, batch_size=1)
        if self.settings.tta:
            self.model.probabilities(np.zeros((1, size, size, 3), np.uint8), tta=True)

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Finish what is queued (the server has stopped accepting), then stop the worker."""
        self.ready = False
        self.metrics.ready.set(0)
        deadline = time.monotonic() + drain_timeout
        while self._queue and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._stopped = True
        self._executor.shutdown(wait=True)

    # -- requests ---------------------------------------------------------------------------------
    async def probabilities(self, images: list[np.ndarray], tta: bool) -> np.ndarray:
        """Queue the images and wait for their calibrated probabilities (N × classes)."""
        return (await self.assess(images, tta))[0]

    async def assess(self, images: list[np.ndarray], tta: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Queue the images; wait for their probabilities and feature distances (None: model has none)."""
        # TTA runs 8 views of each image: it takes 8 places of the queue, so the queue bounds the work
        # waiting, and a client asking for tta is refused (503) 8 times sooner, not let in for 8× the cost.
        cost = len(images) * (TTA_VIEWS if tta else 1)
        if self._load + cost > self.settings.queue_size:
            raise Overloaded(self._retry_after())
        self._load += cost
        loop = asyncio.get_running_loop()
        now = loop.time()
        items = [_Item(img, tta, loop.create_future(), now, self._busy) for img in images]
        self._queue.extend(items)
        self.metrics.queue_depth.set(len(self._queue))
        self._arrived.set()
        # One timer for the request instead of wait_for(gather(...)), which costs a task and two
        # futures per request; an expired or abandoned request's items are done, so the worker skips them.
        timer = loop.call_later(self.settings.request_timeout_s, _expire, items, self.settings.request_timeout_s)
        try:
            rows = [await item.future for item in items]
        finally:
            timer.cancel()
            for item in items:
                if not item.future.done():
                    item.future.cancel()  # the request went away: the worker skips these
                elif not item.future.cancelled():
                    item.future.exception()  # retrieved: asyncio logs errors nobody looked at
        distance = None if rows[0][1] is None else np.array([d for _, d in rows])
        return np.stack([p for p, _ in rows]), distance

    def predictions(self, probs: np.ndarray, top_k: int, files: list[str | None],
                    distance: np.ndarray | None = None) -> list[dict]:
        named = None if all(f is None for f in files) else files
        return [p.to_dict() for p in self.model.to_predictions(probs, top_k, named, distance)]

    def _retry_after(self) -> int:
        batches = math.ceil((self._load + 1) / self.max_batch)
        return max(1, math.ceil(batches * self._batch_seconds))

    # -- the batching worker ----------------------------------------------------------------------
    async def _run_forever(self) -> None:
        while True:
            batch = await self._collect()
            try:
                await self._run(batch)
            except Exception as exc:  # never let one bad batch stop the worker
                log.exception("inference failed")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
            finally:
                self._busy = bool(self._queue)  # what queued meanwhile waited for the busy model

    async def _collect(self) -> list[_Item]:
        """Wait for a first item, then for more until the batch is full or its deadline passes."""
        while not self._queue:
            self._busy = False
            self._arrived.clear()
            await self._arrived.wait()
        self._busy = True
        if self.idle_dispatch and not self._queue[0].model_busy:
            return self._take()
        loop = asyncio.get_running_loop()
        deadline = self._queue[0].queued_at + self.max_wait
        while len(self._queue) < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return self._take()

    def _take(self) -> list[_Item]:
        batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        self._load -= sum(TTA_VIEWS if item.tta else 1 for item in batch)
        self.metrics.queue_depth.set(len(self._queue))
        return [item for item in batch if not item.future.done()]  # drop timed-out requests

    async def _run(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        for tta in (False, True):
            items = [item for item in batch if item.tta == tta]
            if not items:
                continue
            images = np.stack([item.image for item in items])
            started = time.perf_counter()
            probs, distance = await loop.run_in_executor(self._executor, self.model.assess, images, tta,
                                                         len(items))
            elapsed = time.perf_counter() - started
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
            self.metrics.inference.observe(elapsed)
            self.metrics.batch_size.observe(len(items))
            self.metrics.images.inc(len(items))
            for i, (item, row) in enumerate(zip(items, probs)):
                if not item.future.done():
                    item.future.set_result((row, None if distance is None else float(distance[i])))
