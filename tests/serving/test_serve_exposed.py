"""Safe when exposed: /metrics on a port of its own, and no absolute path of the build machine in /v1/model."""

from __future__ import annotations

import json
import re

import httpx
from tests.helpers import free_port

from seedlings.serving.paths import public_meta

ABSOLUTE = re.compile(r"(?<![\w.:/~-])/(?:work|home|tmp|root|Users|opt|srv)/")


def test_metrics_port_moves_metrics_off_the_main_port(start_server):
    port = free_port()
    srv = start_server("--metrics-port", str(port))
    main = httpx.get(srv.url + "/metrics", timeout=10)
    assert main.status_code == 404 and str(port) in main.json()["error"]["message"]
    assert httpx.get(srv.url + "/healthz", timeout=10).status_code == 200
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'seedlings_http_requests_total{method="GET",route="/healthz",status="200"}' in text.replace(
        'route="/healthz",method="GET"', 'method="GET",route="/healthz"'), text[-2000:]


def test_model_card_shows_no_build_machine_paths(start_server):
    """The packaged model's model.json held absolute paths (made before export wrote relative ones)."""
    from seedlings.inference import DEFAULT_MODEL_DIR

    shipped = (DEFAULT_MODEL_DIR / "model.json").read_text()
    srv = start_server("--model", str(DEFAULT_MODEL_DIR))
    card = httpx.get(srv.url + "/v1/model", timeout=10).text
    assert not ABSOLUTE.search(card), card
    if ABSOLUTE.search(shipped):  # the card is cut from those reports, not merely missing them
        assert "plant-seedlings" in card or "train" in card


def test_paths_are_cut_to_their_last_component():
    meta = {"training": {"command": "/home/me/seedlings/src/seedlings/__main__.py train --data /data/plants/train "
                                    "--out /home/me/runs/r64", "data": "C:\\Users\\me\\plants"},
            "export": {"parity_images": "64 validation images of /home/me/data/train"},
            "links": ["https://example.com/a/b", "ratio 1/2"], "n": 3}
    out = public_meta(meta)
    assert out["training"]["command"] == "__main__.py train --data train --out r64"
    assert out["training"]["data"] == "plants" and out["export"]["parity_images"].endswith("of train")
    assert out["links"] == meta["links"] and out["n"] == 3
    assert "/home/me" not in json.dumps(out)
