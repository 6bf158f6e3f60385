"""The Omniglot downloader against a local HTTP server that serves the real minimal archive.

The server can serve the file faithfully, with flipped bytes, or cut the connection midway (sending
fewer bytes than its Content-Length promises), and it honours Range requests unless told not to.
"""

import hashlib
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from metalab.data import download
from metalab.errors import MetalabError

NAME = "images_background_small1"
SPEC = download.ARCHIVES[NAME]


def _shared_archive() -> Path:
    root = os.environ.get("METALAB_DATA")
    folder = Path(root) if root else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"
    return folder / f"{NAME}.zip"


ARCHIVE = _shared_archive()
pytestmark = pytest.mark.skipif(
    not ARCHIVE.exists(),
    reason=f"the real archive {ARCHIVE} is absent (set METALAB_DATA to the folder holding {NAME}.zip)")


class FakeServer:
    """Serves `payload` at /<path>. Knobs: corrupt, cut (first N answers stop halfway), honour_range."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.corrupt = False
        self.cut = 0  # how many answers still get cut; a large number means always
        self.honour_range = True
        self.requests: list[dict] = []  # one entry per request: its path and Range header
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append({"path": self.path, "range": self.headers.get("Range")})
                body = server.body()
                start = 0
                requested = self.headers.get("Range")
                if requested and server.honour_range:
                    start = int(requested.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                piece = body[start:]
                self.send_header("Content-Length", str(len(piece)))
                self.end_headers()
                if server.cut > 0:
                    server.cut -= 1
                    piece = piece[:len(piece) // 2]  # promise everything, send half, hang up
                    self.close_connection = True
                self.wfile.write(piece)

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def body(self) -> bytes:
        """What is served: the payload, with 16 bytes inverted in the middle when corrupt."""
        if not self.corrupt:
            return self.payload
        middle = len(self.payload) // 2
        flipped = bytes(b ^ 0xFF for b in self.payload[middle:middle + 16])
        return self.payload[:middle] + flipped + self.payload[middle + 16:]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def fast_and_local(monkeypatch):
    """No real waits between retries, short socket timeouts, and no proxy for 127.0.0.1."""
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    monkeypatch.setattr(download, "TIMEOUT_S", 5.0)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def server(monkeypatch):
    fake = FakeServer(ARCHIVE.read_bytes())
    monkeypatch.setenv(download.URL_ENV, fake.url)
    yield fake
    fake.close()


def _leftovers(folder: Path) -> list[str]:
    """Files in the data folder other than filelock's lock files."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_good_download_verifies_and_lands_atomically(server, tmp_path):
    found = download.ensure_archives([NAME], tmp_path, progress=False)
    path, sha = found[NAME]
    assert path == tmp_path / f"{NAME}.zip"
    assert path.read_bytes() == server.payload
    assert sha == SPEC.sha256
    assert _leftovers(tmp_path) == [f"{NAME}.zip"]  # no .part left behind
    assert server.requests == [{"path": f"/{NAME}.zip", "range": None}]


def test_existing_good_file_needs_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv(download.URL_ENV, f"http://127.0.0.1:{_closed_port()}")
    (tmp_path / f"{NAME}.zip").write_bytes(ARCHIVE.read_bytes())
    path, sha = download.ensure_archives([NAME], tmp_path, download=False)[NAME]
    assert sha == SPEC.sha256 and path == tmp_path / f"{NAME}.zip"


def test_corrupted_download_is_deleted_and_reported(server, tmp_path):
    server.corrupt = True
    with pytest.raises(MetalabError) as caught:
        download.ensure_archives([NAME], tmp_path, progress=False)
    message = str(caught.value)
    served = server.body()
    assert f"expected md5 {SPEC.md5}, got {hashlib.md5(served).hexdigest()}" in message
    assert f"expected sha256 {SPEC.sha256}, got {hashlib.sha256(served).hexdigest()}" in message
    assert _leftovers(tmp_path) == []


def test_cut_connection_is_resumed_with_range(server, tmp_path):
    server.cut = 1
    path, sha = download.ensure_archives([NAME], tmp_path, progress=False)[NAME]
    assert sha == SPEC.sha256 and path.read_bytes() == server.payload
    half = len(server.payload) // 2
    assert [r["range"] for r in server.requests] == [None, f"bytes={half}-"]
    assert _leftovers(tmp_path) == [f"{NAME}.zip"]


def test_stale_part_from_another_file_is_restarted_from_zero(server, tmp_path, capsys):
    (tmp_path / f"{NAME}.zip.part").write_bytes(b"x" * 1000)  # left by an older, different download
    _, sha = download.ensure_archives([NAME], tmp_path, progress=False)[NAME]
    assert sha == SPEC.sha256
    assert [r["range"] for r in server.requests] == ["bytes=1000-", None]
    assert "from the start" in capsys.readouterr().err
    assert _leftovers(tmp_path) == [f"{NAME}.zip"]


def test_cut_connection_restarts_when_server_ignores_range(server, tmp_path):
    server.cut, server.honour_range = 1, False
    _, sha = download.ensure_archives([NAME], tmp_path, progress=False)[NAME]
    assert sha == SPEC.sha256
    assert len(server.requests) == 2 and server.requests[1]["range"] is not None  # asked, got a 200


def test_server_that_always_cuts_gives_up_cleanly(server, tmp_path):
    server.cut = 10 ** 6
    with pytest.raises(MetalabError) as caught:
        download.ensure_archives([NAME], tmp_path, progress=False)
    message = str(caught.value)
    assert f"{NAME}.zip" in message and str(tmp_path) in message and "connection closed" in message
    assert len(server.requests) == download.MAX_ATTEMPTS
    assert not (tmp_path / f"{NAME}.zip").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_names_every_missing_file_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(download.URL_ENV, f"http://127.0.0.1:{_closed_port()}")
    names = [NAME, "images_background_small2", "all_runs"]
    with pytest.raises(MetalabError) as caught:
        download.ensure_archives(names, tmp_path, progress=False)
    message = str(caught.value)
    for name in names:
        spec = download.ARCHIVES[name]
        assert spec.filename in message and spec.url in message
    assert str(tmp_path) in message and "could not be downloaded" in message
    assert not (tmp_path / f"{NAME}.zip").exists()


def test_existing_corrupt_file_is_replaced(server, tmp_path, capsys):
    bad = tmp_path / f"{NAME}.zip"
    bad.write_bytes(b"not the archive")
    _, sha = download.ensure_archives([NAME], tmp_path, progress=False)[NAME]
    assert sha == SPEC.sha256 and bad.read_bytes() == server.payload
    assert "deleting it and downloading it again" in capsys.readouterr().err


def test_existing_corrupt_file_without_download_is_an_error(tmp_path):
    bad = tmp_path / f"{NAME}.zip"
    bad.write_bytes(b"not the archive")
    with pytest.raises(MetalabError, match=f"expected sha256 {SPEC.sha256}, got "):
        download.ensure_archives([NAME], tmp_path, download=False)
    assert bad.exists()  # without permission to download, the user's file is left alone


def test_missing_without_download_lists_them(server, tmp_path):
    names = [NAME, "images_background_small2"]
    with pytest.raises(MetalabError) as caught:
        download.ensure_archives(names, tmp_path, download=False)
    message = str(caught.value)
    for name in names:
        assert f"{name}.zip" in message and download.ARCHIVES[name].url in message
    assert str(tmp_path) in message and "downloading is turned off" in message
    assert server.requests == []


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(MetalabError, match="known archives: all_runs, images_background"):
        download.ensure_archives(["images_foreground"], tmp_path)


def test_file_without_published_checksum_is_checked_as_zip(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(download.ARCHIVES, NAME, download.ArchiveSpec(NAME, f"{NAME}.zip", None, None))
    _, sha = download.ensure_archives([NAME], tmp_path, progress=False)[NAME]
    assert sha == SPEC.sha256
    assert "could not be verified" in capsys.readouterr().err
