"""The fast path for ``POST /v1/predict``: same answers and errors as FastAPI's full path, less CPU.

The multipart splitter is held to Starlette's parser on a corpus of bodies: where it answers, it
answers the same; where a body is unusual, it declines (None) and the full parser decides.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser
from tests.serving.conftest import png_bytes

from seedlings.serving.multipart import split_files
from seedlings.serving.routes_v1 import PredictFastPath, simple_query

CT = "multipart/form-data; boundary=b0und"


def starlette_parts(body: bytes, content_type: str, max_files: int = 32) -> list[tuple[str, str | None, bytes]]:
    async def parse():
        async def stream():
            yield body

        form = await MultiPartParser(Headers({"content-type": content_type}), stream(), max_files=max_files,
                                     max_fields=max_files).parse()
        out = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                out.append((name, value.filename, await value.read()))
            else:
                out.append((name, None, value.encode()))
        return out

    return asyncio.run(parse())


def encoded(files, data=None) -> tuple[bytes, str]:
    """A body and Content-Type exactly as httpx (and so most clients) send them."""
    request = httpx.Request("POST", "http://x/v1/predict", files=files, data=data)
    return request.read(), request.headers["content-type"]


def part(name: str, filename: str, data: bytes, boundary: str = "b0und") -> bytes:
    return (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"


PNG = png_bytes()
PLAIN = {
    "one file (httpx)": encoded({"file": ("a.png", PNG, "image/png")}),
    "three files (httpx)": encoded([("file", (f"{i}.png", PNG, "image/png")) for i in range(3)]),
    "other field name": encoded({"photo": ("a.png", PNG, "image/png")}),
    "unicode file name": encoded({"file": ("blätter ø.png", PNG, "image/png")}),
    "empty file": encoded({"file": ("a.png", b"", "image/png")}),
    "data holding the boundary without CRLF": (part("file", "a.png", b"x--b0und y--b0und--") + b"--b0und--", CT),
    "data ending in CRLF": (part("file", "a.png", PNG + b"\r\n") + b"--b0und--\r\n", CT),
    "quoted boundary": (part("file", "a.png", PNG) + b"--b0und--", 'multipart/form-data; boundary="b0und"'),
    "no space after ;": (part("file", "a.png", PNG).replace(b"; ", b";") + b"--b0und--",
                         "multipart/form-data;boundary=b0und"),
    "semicolon in file name": (part("file", "a;b.png", PNG) + b"--b0und--", CT),
    "escaped quote in file name": (part("file", 'a\\"b.png', PNG) + b"--b0und--", CT),
    "windows path as file name": (part("file", "C:\\photos\\a.png", PNG) + b"--b0und--", CT),
}
UNUSUAL = {
    "text field too": encoded({"file": ("a.png", PNG, "image/png")}, data={"note": "hi"}),
    "text in the file field": encoded({"other": ("a.png", PNG, "image/png")}, data={"file": "hello"}),
    "preamble": (b"hello\r\n" + part("file", "a.png", PNG) + b"--b0und--", CT),
    "epilogue": (part("file", "a.png", PNG) + b"--b0und--\r\ntrailing words", CT),
    "no closing delimiter": (part("file", "a.png", PNG), CT),
    "boundary followed by other bytes": (part("file", "a.png", b"x\r\n--b0undX y") + b"--b0und--", CT),
    "charset parameter": (part("file", "a.png", PNG) + b"--b0und--", CT + "; charset=latin-1"),
    "no file name": (b'--b0und\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc\r\n--b0und--', CT),
    "no name": (b'--b0und\r\nContent-Disposition: form-data; filename="a.png"\r\n\r\nabc\r\n--b0und--', CT),
    "header without colon": (b"--b0und\r\nbroken header\r\n\r\nabc\r\n--b0und--", CT),
    "broken": (b"--x\r\nbroken", "multipart/form-data; boundary=x"),
    "33 files": encoded([("file", (f"{i}.png", b"x", "image/png")) for i in range(33)]),
}


@pytest.mark.parametrize("name", PLAIN)
def test_plain_bodies_split_as_starlette_parses_them(name):
    body, content_type = PLAIN[name]
    ours = split_files(body, content_type, max_files=32)
    assert ours is not None, "a plain body should take the fast path"
    assert [(n, f, d) for n, f, d in ours] == starlette_parts(body, content_type)


@pytest.mark.parametrize("name", UNUSUAL)
def test_unusual_bodies_go_to_the_full_parser(name):
    body, content_type = UNUSUAL[name]
    assert split_files(body, content_type, max_files=32) is None


@pytest.mark.parametrize(("raw", "expected"), [
    (b"", {}), (b"top_k=3", {"top_k": 3}), (b"tta=true&top_k=1000", {"tta": True, "top_k": 1000}),
    (b"tta=false", {"tta": False}),
    (b"top_k=0", None), (b"top_k=1001", None), (b"top_k=-1", None), (b"top_k=3&top_k=4", None),
    (b"tta=1", None), (b"tta=maybe", None), (b"other=1", None), (b"top%5Fk=3", None), (b"top_k", None),
])
def test_simple_query(raw, expected):
    assert simple_query(raw) == expected


def run_asgi(app, scope: dict, body: bytes = b"") -> tuple[int, bytes]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def scope_for(app, path: str = "/v1/predict", query: bytes = b"", method: str = "POST") -> dict:
    return {"type": "http", "method": method, "path": path, "query_string": query, "root_path": "",
            "headers": [(b"content-type", b"image/png")], "app": app}


def test_fast_path_answers_with_the_apps_handlers_and_route():
    """Plain requests never reach the inner app; errors come from the app's exception handlers."""
    from seedlings.serving.app import create_app
    from seedlings.serving.routes_v1 import router
    from seedlings.serving.settings import Settings

    app = create_app(Settings())  # lifespan not run: no model, so /v1/predict is 503 not_ready
    route = next(r for r in router.routes if r.path == "/v1/predict")
    inner_calls = []

    async def inner(scope, receive, send):
        inner_calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    fast = PredictFastPath(inner, route)
    scope = scope_for(app, query=b"top_k=3")
    status, body = run_asgi(fast, scope, PNG)
    assert (status, inner_calls) == (503, []) and b'"not_ready"' in body
    assert scope["route"] is route  # what the metrics middleware labels by
    for other in (scope_for(app, query=b"top_k=0"), scope_for(app, method="GET"), scope_for(app, path="/v1/model"),
                  {**scope_for(app), "root_path": "/api"}):
        assert run_asgi(fast, other)[0] == 299
    assert len(inner_calls) == 4


def test_fast_and_full_paths_give_the_same_answers(client):
    """``?top_k=3`` takes the fast path; ``?top_k=3&top_k=3`` (FastAPI keeps the last) the full one."""
    files = [("file", (f"{i}.png", png_bytes(), "image/png")) for i in range(2)]
    fast = client.post("/v1/predict?top_k=3", files=files)
    full = client.post("/v1/predict?top_k=3&top_k=3", files=files)
    assert fast.status_code == full.status_code == 200, (fast.text, full.text)
    assert fast.json() == full.json()
    bad = [("file", ("x.png", b"not an image", "image/png"))]
    fast, full = client.post("/v1/predict", files=bad), client.post("/v1/predict?top_k=5&top_k=5", files=bad)
    assert fast.status_code == full.status_code == 422
    assert fast.json() == full.json()
    metrics = client.get("/metrics").text
    assert 'seedlings_http_requests_total{method="POST",route="/v1/predict",status="422"}' in metrics
