"""Debian's nginx on a loopback port with docs/deploy/nginx.conf as shipped: its own main
configuration, prefix, pid file and self-signed certificate in a folder of the test's, and
``nginx -t`` before it starts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO
from send_helpers import Lines
from web_helpers import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SITE = REPO / "docs/deploy/nginx.conf"


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost: the far side's TLS, trusted by the test."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def site_config(
    prefix: Path, *, port: int, redirect_port: int, upstream: int, static: Path | None = None
) -> str:
    """docs/deploy/nginx.conf, as shipped, with this test's ports, certificate and names,
    inside a main configuration whose every path is under ``prefix``. With ``static``, the
    optional variant: the archive from files, the personal routes still proxied."""
    site = SITE.read_text(encoding="utf-8")
    if static is not None:
        start = site.index("    location / {")
        end = site.index("    }\n", start) + len("    }\n")
        site = site[:start] + site[end:]
        # The commented variant's own lines: a location, its directives, its closing brace.
        site = re.sub(r"^    # (?=location|\}|    )", "    ", site, flags=re.MULTILINE)
        site = site.replace("/srv/newsletter-static", str(static))
    site = (
        site.replace("listen 80;", f"listen 127.0.0.1:{redirect_port};")
        .replace("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;")
        .replace("127.0.0.1:8000", f"127.0.0.1:{upstream}")
        .replace("news.example.org;", "localhost;")
        .replace("/etc/letsencrypt/live/news.example.org", str(prefix))
    )
    site = "\n".join(line for line in site.splitlines() if "[::]" not in line)
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # Started by root, nginx's workers would run as nobody, who cannot read the test's
    # private temporary folder: they run as the test's own user.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""daemon off;
{user}worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
error_log stderr notice;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
{temp}
{site}
}}
"""


@dataclass
class Nginx:
    prefix: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Lines

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"


def start_nginx(prefix: Path, upstream: int, static: Path | None = None) -> Nginx:
    prefix.mkdir(parents=True, exist_ok=True)
    certificate(prefix)
    (prefix / "fullchain.pem").write_bytes((prefix / "cert.pem").read_bytes())
    (prefix / "privkey.pem").write_bytes((prefix / "key.pem").read_bytes())
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        site_config(prefix, port=port, redirect_port=free_port(), upstream=upstream, static=static),
        encoding="utf-8",
    )
    checked = subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr
    process = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf)], stderr=subprocess.PIPE)
    log = Lines(process.stderr)
    # nginx opens its listening sockets before it starts its workers, and says so on stderr
    # (the notice level of the configuration's second error_log).
    log.wait_for("start worker process", timeout=60)
    return Nginx(prefix, port, process, log)


def stop_nginx(nginx: Nginx) -> None:
    nginx.process.terminate()
    nginx.process.wait(timeout=60)
    nginx.log.close()


@contextmanager
def nginx_in_front(prefix: Path, upstream: int, static: Path | None = None) -> Iterator[Nginx]:
    """nginx at https://localhost:PORT in front of ``mailer serve`` on ``upstream``."""
    nginx = start_nginx(prefix, upstream, static)
    try:
        yield nginx
    finally:
        stop_nginx(nginx)
