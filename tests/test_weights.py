"""Checked weight downloads, against an HTTP server on 127.0.0.1 that the test starts (no other address)."""

from __future__ import annotations

import hashlib
import http.server
import logging
import socket
import threading

import pytest

from evaluation.spaces.clip import MODELS as CLIP_MODELS
from evaluation.spaces.dinov2 import MODELS as DINOV2_MODELS
from evaluation.spaces.inception import INCEPTION
from evaluation.weights import WeightsFile, cached_path, sha256_of, weights_errors, weights_file
from genbench.errors import ConfigError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: more than one read chunk's worth of progress lines
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serves ``/good.pth`` (PAYLOAD) and ``/bad.pth`` (PAYLOAD with one byte flipped); counts requests."""
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GENBENCH_OFFLINE", raising=False)
    hits: list[str] = []
    files = {"/good.pth": PAYLOAD, "/bad.pth": PAYLOAD[:-1] + b"\x00"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = files.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def spec(url: str, name: str = "toy.pth", sha256: str = SHA) -> WeightsFile:
    return WeightsFile(name, url, sha256, sha256_prefix=sha256[:8], checked_by="test")


def test_a_good_download_is_checked_cached_and_fetched_once(server, caplog):
    base, hits = server
    caplog.set_level(logging.INFO, logger="genbench.evaluation")
    path = weights_file(spec(f"{base}/good.pth"), None, "eval.toy_weights", "the toy space needs its weights")
    assert (
        path == cached_path(spec(f"{base}/good.pth"))
        and path.read_bytes() == PAYLOAD
        and sha256_of(path) == SHA
    )
    assert hits == ["/good.pth"]
    assert "100 %" in caplog.text and "checked" in caplog.text  # progress lines, then the hash
    again = weights_file(
        spec(f"{base}/good.pth"), None, "eval.toy_weights", "the toy space needs its weights"
    )
    assert again == path and hits == ["/good.pth"]  # the cache answers; the server is not asked again
    assert not list(path.parent.glob(".*part"))


def test_a_corrupted_download_is_refused_with_both_hashes_and_not_kept(server):
    base, hits = server
    bad = spec(f"{base}/bad.pth")
    actual = hashlib.sha256(PAYLOAD[:-1] + b"\x00").hexdigest()
    with pytest.raises(ConfigError) as e:
        weights_file(bad, None, "eval.toy_weights", "the toy space needs its weights")
    assert f"has SHA-256 {actual}, expected {SHA}" in str(e.value) and "not kept" in str(e.value)
    assert not cached_path(bad).exists() and not list(cached_path(bad).parent.glob(".*part"))
    # a published prefix alone is checked too
    prefix_only = WeightsFile("p.pth", f"{base}/bad.pth", sha256_prefix=SHA[:8])
    with pytest.raises(ConfigError, match=f"expected {SHA[:8]}"):
        weights_file(prefix_only, None, "eval.toy_weights", "the toy space needs its weights")


def test_offline_is_one_error_naming_the_file_the_path_and_the_option(server, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port with nothing listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = spec(f"http://127.0.0.1:{port}/good.pth")
    with pytest.raises(ConfigError) as e:
        weights_file(down, None, "eval.toy_weights", "eval.features=toy needs the toy weights")
    (msg,) = e.value.problems
    assert msg.startswith("eval.toy_weights=null: eval.features=toy needs the toy weights")
    assert (
        "ConnectionRefusedError" in msg and f"Place toy.pth (from {down.url}) at {cached_path(down)}" in msg
    )
    assert "or set eval.toy_weights=PATH" in msg
    # GENBENCH_OFFLINE: found before any work by the config check, without a connection attempt
    monkeypatch.setenv("GENBENCH_OFFLINE", "1")
    base, hits = server
    (msg,) = weights_errors(
        spec(f"{base}/good.pth"), None, "eval.toy_weights", "the toy space needs its weights"
    )
    assert "GENBENCH_OFFLINE is set" in msg and hits == []
    # a path option that is no file is its own error; one that is a file is used as given
    assert weights_errors(down, str(tmp_path / "nope.pth"), "eval.toy_weights", "x") == [
        f"eval.toy_weights={str(tmp_path / 'nope.pth')!r}: no such file"]  # fmt: skip
    local = tmp_path / "mine.pth"
    local.write_bytes(b"fine-tuned")
    assert weights_file(down, str(local), "eval.toy_weights", "x") == local


def test_the_published_files_and_their_checks():
    """Every official file has a full SHA-256 (64 hex digits) and an https source; torch hub names carry the prefix."""
    files = [INCEPTION] + [m[2] for m in DINOV2_MODELS.values()] + [m[2] for m in CLIP_MODELS.values()]
    for f in files:
        assert f.url.startswith("https://") and f.url.endswith("/" + f.name), f.name
        assert f.sha256 and len(f.sha256) == 64 and int(f.sha256, 16) >= 0 and f.checked_by, f.name
    assert INCEPTION.sha256.startswith(INCEPTION.sha256_prefix) and INCEPTION.sha256_prefix in INCEPTION.name
    for _, _, f in CLIP_MODELS.values():  # OpenAI publishes the SHA-256 as the address's folder
        assert f.url.split("/")[-2] == f.sha256
