"""seedlings: identify plant seedlings from photos, from a laptop to a Kubernetes cluster.

The public API is small and imports nothing heavy until it is used:

    >>> import seedlings
    >>> model = seedlings.load_model()              # the default model shipped in the package
    >>> model.predict("photo.png")[0].species

Training needs the ``train`` extra (``pip install 'seedlings[train]'``).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "SeedlingsError",
    "TrainConfig",
    "load_model",
    "train",
    "Prediction",
]

from seedlings.errors import SeedlingsError


def __getattr__(name: str):
    # Lazy attributes keep `import seedlings` cheap and torch-free.
    if name == "TrainConfig":
        from seedlings.config import TrainConfig

        return TrainConfig
    if name == "train":
        from seedlings.training.fit import train

        return train
    if name == "load_model":
        from seedlings.api import load_model

        return load_model
    if name == "Prediction":
        from seedlings.inference import Prediction

        return Prediction
    raise AttributeError(f"module 'seedlings' has no attribute {name!r}")
