"""What a correction may say: one of the model's species, ``other:<name>`` for a species the model does not
know yet, or ``not-a-seedling``. Pure functions; the service, the store and the export share them."""

from __future__ import annotations

import re
import unicodedata

from seedlings.errors import SeedlingsError

NOT_A_SEEDLING = "not-a-seedling"
OTHER = "other:"
NAME_MAX = 80  # characters of a species name
# Letters (any script), digits, spaces and - ' . ( ) ,: a name becomes a folder of the training layout,
# so no path separators, no leading dot, nothing a file system or a shell treats specially.
_NAME = re.compile(r"^[^\W_][\w '().,-]*$")


class LabelError(SeedlingsError):
    """A label that cannot be stored; ``field`` names the form field."""

    def __init__(self, message: str, field: str = "species"):
        self.field = field
        super().__init__(message)


def parse_label(raw: str, classes: list[str] | tuple[str, ...]) -> str:
    """The stored form of ``raw``: the model's spelling of a known species (case and spaces forgiven),
    ``other:<name>`` (a known species typed as a new one becomes the known one) or ``not-a-seedling``."""
    text = unicodedata.normalize("NFC", (raw or "").strip())
    if not text:
        raise LabelError(f"'species' is empty: send one of the model's species, '{OTHER}<name>' "
                         f"or '{NOT_A_SEEDLING}'")
    if text.lower() == NOT_A_SEEDLING:
        return NOT_A_SEEDLING
    name, other = (text[len(OTHER):].strip(), True) if text.lower().startswith(OTHER) else (text, False)
    known = _known(name, classes)
    if known is not None:
        return known
    if not other:
        shown = ", ".join(classes[:12]) + (" …" if len(classes) > 12 else "")
        raise LabelError(f"'{_clip(text)}' is not a species this model knows ({shown}); for a species it does "
                         f"not know send '{OTHER}<name>', for a photo of something else '{NOT_A_SEEDLING}'")
    return OTHER + check_name(name)


def check_name(name: str) -> str:
    """A new species' name, or LabelError saying what is wrong with it."""
    if not name:
        raise LabelError(f"'{OTHER}' needs a name after it, e.g. '{OTHER}Common Poppy'")
    if len(name) > NAME_MAX:
        raise LabelError(f"the species name has {len(name)} characters; at most {NAME_MAX}")
    if not _NAME.match(name) or ".." in name:
        raise LabelError(f"'{_clip(name)}' is not a usable species name: letters, digits, spaces and - ' . ( ) , "
                         "only, starting with a letter or digit (it becomes a folder name)")
    return " ".join(name.split())


def folder_name(label: str) -> str | None:
    """The training-layout folder of a stored label; None for ``not-a-seedling`` (not a species). Checked again
    here, not only when the service stored it: a row written by other means must not name a path (LabelError)."""
    if label == NOT_A_SEEDLING:
        return None
    return check_name(label[len(OTHER):] if label.startswith(OTHER) else label)


def _known(name: str, classes) -> str | None:
    key = " ".join(name.split()).casefold()
    return next((c for c in classes if c.casefold() == key), None)


def _clip(text: str, n: int = 60) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= n else text[:n] + "…"
