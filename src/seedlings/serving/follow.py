"""``serve --model REGISTRY``: follow the registry's current pointer, switching models without failing a request.

A background task reads ``REGISTRY/current.json`` every ``registry_poll_s`` seconds (seedlings/registry.py). When
it names another version, that version is loaded (checked against its sha256s, opened by ONNX Runtime) and warmed in
worker threads while the old model keeps answering. Then ``app.state.predictor`` and ``app.state.decoder`` are
replaced in one step of the event loop: every request that starts afterwards gets the new model. Requests that
started before finish on the old one with its own decoder (``deps.decoder_for``): :class:`CountRequests` counts
requests by the generation they started in, and the old predictor is stopped once the last request of its
generation has answered.

A version that fails to load is logged, counted (``seedlings_model_switches_total{result="failed"}``) and not tried
again until the pointer names another version; the old model keeps serving and /readyz stays ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from seedlings.registry import Registry, is_registry
from seedlings.serving.decoding import Decoder
from seedlings.serving.limits import release_memory
from seedlings.serving.predictor import Predictor
from seedlings.serving.settings import Settings

log = logging.getLogger("seedlings.serving")


class Generations:
    """HTTP requests in flight by the model generation they started in (0, then one more per swap). Used from the
    event loop only, so without a lock."""

    def __init__(self):
        self.current = 0
        self.in_flight: dict[int, int] = {0: 0}
        self._drained: dict[int, asyncio.Event] = {}

    def enter(self) -> int:
        generation = self.current
        self.in_flight[generation] += 1
        return generation

    def leave(self, generation: int) -> None:
        self.in_flight[generation] -= 1
        if self.in_flight[generation] == 0 and generation != self.current:
            del self.in_flight[generation]
            event = self._drained.pop(generation, None)
            if event is not None:
                event.set()

    def advance(self) -> int:
        """Start a new generation; returns the old one, whose requests may still hold the old model."""
        old = self.current
        self.current += 1
        self.in_flight[self.current] = 0
        if self.in_flight[old] == 0:
            del self.in_flight[old]
        return old

    async def drained(self, generation: int) -> None:
        """Return once every request of ``generation`` (an old one) has answered."""
        if generation in self.in_flight:
            await self._drained.setdefault(generation, asyncio.Event()).wait()


class CountRequests:
    """Pure ASGI middleware, outermost: each HTTP request counted in the generation it started in."""

    def __init__(self, app, generations: Generations):
        self.app = app
        self.generations = generations

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        generation = self.generations.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.generations.leave(generation)


def prepare_following(app) -> None:
    """``create_app``'s part: with ``--model REGISTRY``, count requests (added last, so it wraps every route)."""
    if is_registry(app.state.settings.model_dir):
        app.state.generations = Generations()
        app.state.decoders = {}  # predictor → its decoder, while a replaced one drains (deps.decoder_for)
        app.add_middleware(CountRequests, generations=app.state.generations)


class Follower:
    """The task that follows one registry's ``current`` pointer for one app (one per worker process)."""

    def __init__(self, app, registry: Registry):
        self.app = app
        self.registry = registry
        self.settings: Settings = app.state.settings
        self.version: str | None = None  # the version being served
        self.failed: str | None = None  # a version that did not load: not tried again until the pointer moves
        self._problem: str | None = None  # the last pointer read error, logged once
        self._task: asyncio.Task | None = None
        self._retiring: set[Predictor] = set()

    @classmethod
    def of(cls, app) -> Follower | None:
        """A follower when the app serves a registry (``prepare_following`` saw one), else None."""
        if getattr(app.state, "generations", None) is None:
            return None
        return cls(app, Registry(app.state.settings.model_dir))

    def model_settings(self) -> Settings:
        """The settings to load the current version with (the pointer read once, now)."""
        folder = self.registry.current_dir()
        self.version = folder.name
        return self.settings.model_copy(update={"model_dir": str(folder)})

    def start(self) -> None:
        self.app.state.decoders[self.app.state.predictor] = self.app.state.decoder
        self._task = asyncio.create_task(self._follow(), name="seedlings-registry")
        log.info("following registry %s: serving version %s; checking %s every %gs", self.registry.root,
                 self.version, "current.json", self.settings.registry_poll_s)

    async def stop(self) -> None:
        """Stop following (shutdown); replaced predictors still draining are stopped too."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for predictor in list(self._retiring):
            await predictor.stop(drain_timeout=self.settings.request_timeout_s)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.settings.registry_poll_s)
            try:
                await self.check()
            except Exception:  # the follower must outlive any surprise; the model in service keeps serving
                log.exception("registry %s: following current.json failed; still serving %s", self.registry.root,
                              self.version)

    async def check(self) -> bool:
        """Swap in the version the pointer names when it is another one; True when one was swapped in."""
        version = await asyncio.to_thread(self._pointed)  # a network volume can be slow: not on the event loop
        if version is None or version in (self.version, self.failed):
            return False
        predictor = await self._load(version)
        if predictor is None:
            return False
        await self._swap(version, predictor)
        return True

    def _pointed(self) -> str | None:
        try:
            version = self.registry.current()
        except Exception as exc:  # a pointer edited by hand, a volume gone: keep serving, say it once
            self._unreadable(exc)
            return None
        self._problem = None
        return version

    def _unreadable(self, exc: Exception) -> None:
        if str(exc) != self._problem:
            log.warning("registry %s: cannot read the current pointer (%s); still serving %s", self.registry.root,
                        exc, self.version)
        self._problem = str(exc)

    async def _load(self, version: str) -> Predictor | None:
        """The new version loaded and warmed (in threads), or None when it cannot be (logged and counted)."""
        metrics = self.app.state.metrics
        predictor = None
        try:
            settings = self.settings.model_copy(update={"model_dir": str(self.registry.version_dir(version))})
            predictor = await asyncio.to_thread(Predictor.load, settings, metrics)
            await predictor.start()
        except Exception as exc:  # a broken version must never take the service down
            self.failed = version
            metrics.model_switches.labels("failed").inc()
            log.error("registry %s: version %s not swapped in: %s; still serving %s", self.registry.root, version,
                      exc, self.version)
            if predictor is not None:
                await predictor.stop(drain_timeout=0)
                metrics.ready.set(1)  # stop() said 0; the model in service is ready
            return None
        return predictor

    async def _swap(self, version: str, predictor: Predictor) -> None:
        app, s = self.app, self.settings
        old, old_decoder = app.state.predictor, app.state.decoder
        decoder = Decoder(app.state.offload, predictor.model.prepare, predictor.model.spec, s.max_pixels,
                          s.max_request_pixels, s.max_decode_pixels)
        decoder.budget = old_decoder.budget  # one pixel budget for the process, whichever model the pixels are for
        app.state.decoders[predictor] = decoder
        # One step of the event loop, no await: every request from here on gets the new model and its decoder.
        app.state.predictor, app.state.decoder = predictor, decoder
        generation = app.state.generations.advance()
        previous, self.version, self.failed = self.version, version, None
        app.state.metrics.model_switches.labels("swapped").inc()
        log.info("registry %s: swapped in version %s (was %s); %d request(s) still on %s", self.registry.root,
                 version, previous, app.state.generations.in_flight.get(generation, 0), previous)
        self._retiring.add(old)
        await self._retire(old, generation)

    async def _retire(self, old: Predictor, generation: int) -> None:
        """Stop the replaced predictor once every request that may hold it has answered."""
        longest = self.settings.upload_timeout_s + self.settings.request_timeout_s  # a request's longest life
        try:
            await asyncio.wait_for(self.app.state.generations.drained(generation), longest + 5)
        except asyncio.TimeoutError:
            log.warning("registry: requests of the replaced model still open after %gs; stopping it", longest + 5)
        await old.stop(drain_timeout=self.settings.request_timeout_s)
        self._retiring.discard(old)
        self.app.state.decoders.pop(old, None)
        self.app.state.metrics.ready.set(1)  # the old predictor's stop() said 0; the new one is ready
        release_memory()
