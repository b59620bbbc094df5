"""Errors meant for people: what was wrong, where, and what to do."""

from __future__ import annotations


class SeedlingsError(Exception):
    """A problem the user can fix; the CLI prints it without a traceback and exits 1."""

    exit_code = 1


class UsageError(SeedlingsError):
    """A wrong flag or argument; exit code 2."""

    exit_code = 2


class ImageError(SeedlingsError):
    """An image that cannot be used; ``code`` is a short machine-readable reason."""

    def __init__(self, message: str, code: str = "invalid_image", path: str | None = None):
        self.code = code
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)
        self.reason = message
        self.images = 1  # how many images of one request failed (the service counts each in its metrics)


def missing_extra(extra: str, module: str) -> SeedlingsError:
    """The error for a feature whose optional dependencies are not installed."""
    return SeedlingsError(
        f"this needs the '{extra}' extra ({module} is not installed): "
        f"pip install 'seedlings[{extra}]'"
    )


# The third-party modules of each extra (pyproject.toml), so a missing one is answered with its pip line.
EXTRA_MODULES = {
    "train": ("torch", "torchvision", "timm", "safetensors", "matplotlib", "onnx", "onnxscript"),
    "serve": ("fastapi", "starlette", "uvicorn", "pydantic", "pydantic_settings", "python_multipart", "multipart",
              "prometheus_client", "pyspng"),
    "batch": ("pyarrow",),
    "feedback": ("sqlalchemy", "alembic", "psycopg"),
}


def extra_for(module: str | None, default: str) -> str | None:
    """The extra that installs ``module`` (``default`` for onnxruntime, which both carry); None if no extra does."""
    root = (module or "").split(".")[0]
    if root == "onnxruntime":
        return default
    return next((extra for extra, modules in EXTRA_MODULES.items() if root in modules), None)
