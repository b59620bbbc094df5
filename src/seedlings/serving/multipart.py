"""A fast path for the multipart bodies that clients actually send: whole files, nothing odd.

Starlette's form parser (python-multipart) runs a callback per chunk and header and spools each
file through a ``SpooledTemporaryFile``; for a 40 kB photo that was about a fifth of the event
loop's time per request (in-process profile, HTTP parsing aside). Uploads are already held in
memory whole (the body limit keeps that bounded), so a well-formed body is split here with
``bytes.find``. Anything unusual (a preamble,
text fields, odd header syntax, a charset, too many files) returns ``None`` and the caller uses
the full parser, so errors and edge cases keep exactly that parser's behaviour.
"""

from __future__ import annotations

import re

from python_multipart.multipart import parse_options_header

# RFC 7230 token characters: header names python-multipart accepts without complaint.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
MAX_BOUNDARY = 70  # RFC 2046; longer ones go to the full parser
MAX_HEADER_LINE = 4096


# What browsers, curl, requests and httpx send; other spellings go through parse_options_header.
_PLAIN_TYPE = re.compile(r"multipart/form-data; ?boundary=([0-9A-Za-z'()+_,\-./:=?]{1,70})")
_PLAIN_DISPOSITION = re.compile(r'form-data; ?name="([^"\\]*)"; ?filename="([^"\\]*)"')


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/form-data`` Content-Type with no other parameters, else None."""
    plain = _PLAIN_TYPE.fullmatch(content_type)
    if plain:
        return plain.group(1).encode("latin-1")
    media, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if media != b"multipart/form-data" or len(options) != 1 or not boundary or len(boundary) > MAX_BOUNDARY:
        return None
    return boundary


def split_files(body: bytes, content_type: str, max_files: int) -> list[tuple[str, str, bytes]] | None:
    """Each part of a plain multipart body as (field name, file name, data), or None: use the full parser.

    Plain means: the body starts with the first delimiter and ends at the closing one (an optional
    CRLF after it), every part is a file (its Content-Disposition has a ``filename``), header lines
    are ``Name: value`` and there are at most ``max_files`` parts.
    """
    boundary = boundary_of(content_type)
    if boundary is None:
        return None
    delimiter = b"--" + boundary
    if not body.startswith(delimiter + b"\r\n"):
        return None
    separator = b"\r\n" + delimiter
    parts: list[tuple[str, str, bytes]] = []
    pos = len(delimiter) + 2
    while True:
        head_end = body.find(b"\r\n\r\n", pos)
        if head_end < 0 or len(parts) == max_files:
            return None
        disposition = _disposition(body[pos:head_end])
        if disposition is None:
            return None
        data_end = body.find(separator, head_end + 4)
        if data_end < 0:
            return None
        parts.append((*disposition, body[head_end + 4:data_end]))
        pos = data_end + len(separator)
        after = body[pos:pos + 2]
        if after == b"--":
            return parts if body[pos + 2:] in (b"", b"\r\n") else None
        if after != b"\r\n":
            return None
        pos += 2


def _disposition(head: bytes) -> tuple[str, str] | None:
    """(field name, file name) from a part's header lines, or None when the part is not a plain file."""
    found = None
    for line in head.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or len(line) > MAX_HEADER_LINE or not _TOKEN.fullmatch(name):
            return None
        if name.lower() == b"content-disposition":
            if found is not None:
                return None
            found = value.lstrip(b" ")
    if found is None:
        return None
    text = found.decode("latin-1")
    plain = _PLAIN_DISPOSITION.fullmatch(text)
    if plain:  # the same result as parse_options_header for these: no escapes, no backslashes
        return _decode(plain.group(1).encode("latin-1")), _decode(plain.group(2).encode("latin-1"))
    kind, options = parse_options_header(text)
    if kind != b"form-data" or b"name" not in options or b"filename" not in options:
        return None
    return _decode(options[b"name"]), _decode(options[b"filename"])


def _decode(raw: bytes) -> str:
    """As Starlette decodes field and file names (UTF-8, else Latin-1)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
