"""No absolute paths of the machine that built a model in what the service shows (``GET /v1/model``).

Model folders made before paths were recorded relative to the run hold the trainer's absolute paths
(data folder, source tree, run folder) in reports such as ``training.command`` or
``export.parity_images``. They say nothing to a user and tell an attacker about the build machine,
so every absolute path in a string is cut to its last component: ``/home/me/data/train`` → ``train``.
"""

from __future__ import annotations

import re

# A POSIX absolute path (not the // of a URL) or a Windows drive path, up to whitespace, a quote or a comma.
_ABSOLUTE = re.compile(r"""(?<![\w.:/~-])(?:/|[A-Za-z]:[\\/])[^\s'",;]*""")


def strip_path(match: re.Match) -> str:
    parts = [p for p in re.split(r"[\\/]", match.group(0)) if p]
    return parts[-1] if parts else "/"


def public_text(text: str) -> str:
    return _ABSOLUTE.sub(strip_path, text)


def public_meta(value):
    """``value`` (JSON: dicts, lists, strings…) with every absolute path cut to its last component."""
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, dict):
        return {k: public_meta(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public_meta(v) for v in value]
    return value
