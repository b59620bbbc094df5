"""Service settings: defaults, then ``SEEDLINGS_*`` environment variables, then ``serve`` flags.

Environment variables because they map one-to-one onto a Kubernetes ConfigMap, and because
``--workers N`` starts fresh processes that can only inherit settings through the environment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from seedlings.cpus import cpu_limit
from seedlings.images import DEFAULT_MAX_PIXELS

ENV_PREFIX = "SEEDLINGS_"
# Decoded pixels: 64 M is one 8,000 × 8,000 photo, or some 2,800 dataset photos (150 × 150).
DEFAULT_DECODE_PIXELS = 64_000_000
# Bodies being read or held: 6 full 10 MiB uploads, or some 1,600 dataset photos (40 KB).
DEFAULT_BODY_BYTES_IN_FLIGHT = 64 * 1024 * 1024


class Settings(BaseSettings):
    """Everything the service can be told; each field is also ``SEEDLINGS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", protected_namespaces=())

    model_dir: str | None = Field(None, description="exported model folder, or a registry folder (its current "
                                                    "version, followed); empty: the packaged default")
    registry_poll_s: float = Field(5.0, gt=0, le=3600, description="with a registry as model_dir: seconds between "
                                                                   "two reads of its current pointer")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64, description="server processes, each with its own model")
    precision: Literal["fp32", "int8"] = "fp32"
    tta: bool = Field(False, description="default for the tta query parameter (8 views, ~8x the work)")
    top_k: int = Field(5, ge=1, description="default number of species in top_k")
    batching: bool = Field(True, description="micro-batch concurrent requests; off: one image per run")
    max_batch: int = Field(16, ge=1, le=1024)
    max_wait_ms: float = Field(2.0, ge=0, le=10_000, description="longest wait for a batch to fill, "
                                                                    "counted from its first request")
    idle_dispatch: bool = Field(True, description="an image that finds the model idle runs at once; "
                                                  "off: every batch waits up to max_wait_ms to fill")
    queue_size: int = Field(256, ge=1, description="images waiting for inference; beyond it 503")
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_body_bytes_in_flight: int = Field(DEFAULT_BODY_BYTES_IN_FLIGHT, ge=1,
                                          description="request bodies held in this process, all requests "
                                                      "together (beyond it 503 + Retry-After, before reading)")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=64, description="per image, checked before decoding")
    max_files: int = Field(32, ge=1, description="images per request (beyond it 413)")
    max_request_pixels: int = Field(DEFAULT_DECODE_PIXELS, ge=64,
                                    description="decoded pixels per request, all its images together; "
                                                "checked from the headers before decoding (beyond it 413)")
    max_decode_pixels: int = Field(DEFAULT_DECODE_PIXELS, ge=64,
                                   description="decoded pixels in flight in this process, all requests "
                                               "together (beyond it 503 + Retry-After, before decoding)")
    header_timeout_s: float = Field(10.0, gt=0, description="longest time for a request's headers to arrive, "
                                                            "from the connection's opening or first byte")
    keepalive_timeout_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="serve /metrics on this port only "
                                                                        "(not on the main port)")
    api_token: SecretStr | None = Field(None, description="when set, prediction endpoints need "
                                                            "'Authorization: Bearer <token>'")
    cors_origins: str = Field("", description="comma-separated origins allowed by CORS; '*' for any")
    request_timeout_s: float = Field(30.0, gt=0, description="longest wait for the model, per request")
    upload_timeout_s: float = Field(60.0, gt=0, description="longest time for a request body to arrive "
                                                            "(a stalled upload gets 408)")
    feedback_db: SecretStr | None = Field(None, description="database for corrections sent to /v1/feedback "
                                                             "(sqlite:///path or postgresql+psycopg://…); "
                                                             "unset: feedback is off and no photo is kept")
    feedback_per_minute: int = Field(30, ge=1, description="feedback requests per client and minute, per worker "
                                                           "(beyond it 429 + Retry-After)")
    feedback_client: Literal["hash", "address", "none"] = Field(
        "hash", description="what is stored of a feedback client's address: a keyed hash, the address, nothing")
    json_logs: bool = False
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    threads: int | None = Field(None, ge=1, description="ONNX Runtime threads per worker; "
                                                        "default: CPUs divided by workers")
    decode_threads: int | None = Field(None, ge=0, description="threads decoding uploads per worker; "
                                                               "default: CPUs divided by workers")

    @field_validator("model_dir", "api_token", "feedback_db", "threads", "decode_threads", "metrics_port",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        """``SEEDLINGS_API_TOKEN=`` in a ConfigMap means "no token", not "the empty token"."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def feedback_url(self) -> str | None:
        return self.feedback_db.get_secret_value() if self.feedback_db else None

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token else None

    def inference_threads(self) -> int:
        """Share the CPUs between worker processes so N workers do not fight over N×cores threads."""
        if self.threads:
            return self.threads
        return max(1, cpu_limit() // self.workers)

    def decoding_threads(self) -> int:
        """Decoding gets a pool of its own, sized to the CPU limit: more threads only queue for the CPUs,
        and each one decoding a large photo holds its pixels in memory."""
        if self.decode_threads is not None:
            return self.decode_threads
        return max(1, cpu_limit() // self.workers)

    def to_env(self) -> dict[str, str]:
        """The settings as ``SEEDLINGS_*`` variables, for worker processes to rebuild them."""
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[ENV_PREFIX + name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        return env
