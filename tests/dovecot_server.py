"""A real IMAP server for the bounce tests: Debian's Dovecot, started by the test.

Each server gets a throwaway folder (outside pytest's private tmp, so Dovecot's unprivileged
processes can reach it) with its configuration, a TLS certificate from trustme, one user in
a passwd-file and a maildir. ``dovecot -F`` runs in the foreground as a child process on a
free loopback port, logging to its stderr; the test waits for its "starting up" line (its
listeners are bound by then) and logs in once, never sleeping.

``Dovecot(introspection_url=...)`` also accepts AUTHENTICATE XOAUTH2, as Exchange Online
does: Dovecot's oauth2 passdb asks that URL (an identity provider on loopback,
tests/oauth_server.py) whether a token is active and whose mailbox it is.
"""

from __future__ import annotations

import contextlib
import getpass
import grp
import imaplib
import os
import pwd
import shutil
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import trustme

from send_helpers import Lines
from smtp_server import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "bounces", "imap-test-password"
START_TIMEOUT = 60.0

CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {dir}/run
state_dir = {dir}/state
log_path = /dev/stderr
ssl = required
ssl_cert = <{dir}/cert.pem
ssl_key = <{dir}/key.pem
{dh}
disable_plaintext_auth = yes
auth_mechanisms = plain login{oauth_mechanisms}
default_internal_user = {internal}
default_login_user = {login}
default_internal_group = {group}
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:{dir}/mail/%u
namespace inbox {{
  inbox = yes
  separator = /
}}
{oauth_passdb}passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {dir}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={dir}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""


OAUTH_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {dir}/oauth2.conf.ext
}}
"""

OAUTH_CONFIG = """\
introspection_mode = post
introspection_url = {url}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
"""


class Dovecot:
    """``with Dovecot() as server:`` a running IMAP server with one empty mailbox."""

    def __init__(self, introspection_url: str | None = None) -> None:
        self.introspection_url = introspection_url
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mailer-dovecot-"))
        self.ca_file = self.dir / "ca.pem"
        self.process: subprocess.Popen[bytes] | None = None
        self.log: Lines | None = None

    def _accounts(self) -> tuple[str, str, str, int, int]:
        """(internal user, login user, group, uid, gid) the server runs its parts as."""
        if os.getuid() == 0:
            user = pwd.getpwnam("dovecot")
            login = "dovenull"
            return "dovecot", login, grp.getgrgid(user.pw_gid).gr_name, user.pw_uid, user.pw_gid
        me = getpass.getuser()
        return me, me, grp.getgrgid(os.getgid()).gr_name, os.getuid(), os.getgid()

    def __enter__(self) -> Dovecot:
        internal, login, group, uid, gid = self._accounts()
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_pem.write_to_path(str(self.dir / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(self.dir / "cert.pem"))
        (self.dir / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n", encoding="utf-8")
        for name in ("run", "state", "mail"):
            (self.dir / name).mkdir()
        os.chown(self.dir / "mail", uid, gid)
        self.dir.chmod(0o755)
        dh = Path("/usr/share/dovecot/dh.pem")
        config = CONFIG.format(
            dir=self.dir,
            port=self.port,
            internal=internal,
            login=login,
            group=group,
            uid=uid,
            gid=gid,
            dh=f"ssl_dh = <{dh}" if dh.is_file() else "",
            oauth_mechanisms=" xoauth2 oauthbearer" if self.introspection_url else "",
            oauth_passdb=OAUTH_PASSDB.format(dir=self.dir) if self.introspection_url else "",
        )
        if self.introspection_url:
            (self.dir / "oauth2.conf.ext").write_text(
                OAUTH_CONFIG.format(url=self.introspection_url), encoding="utf-8"
            )
        (self.dir / "dovecot.conf").write_text(config, encoding="utf-8")
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.dir / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.process.stderr is not None
        self.log = Lines(self.process.stderr)
        # The master logs this once its listeners are bound; then the greeting must follow.
        self.log.wait_for("starting up", timeout=START_TIMEOUT)
        self.client().logout()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the test's own view of the mailbox ---------------------------------------------------

    def client(self) -> imaplib.IMAP4_SSL:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        imap = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=context, timeout=30)
        imap.login(USER, PASSWORD)
        return imap

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        imap = self.client()
        try:
            status, data = imap.append(
                f'"{folder}"', "", imaplib.Time2Internaldate(time.time()), raw
            )
            assert status == "OK", data
        finally:
            imap.logout()

    def messages(self, folder: str = "INBOX") -> list[bytes]:
        """Every message in ``folder`` not flagged deleted, oldest first; an absent folder
        has none."""
        imap = self.client()
        try:
            status, _ = imap.select(f'"{folder}"', readonly=True)
            if status != "OK":
                return []
            _, found = imap.uid("SEARCH", "UNDELETED")
            result = []
            for uid in (found[0] or b"").split():
                _, data = imap.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
                result += [bytes(item[1]) for item in data if isinstance(item, tuple)]
            return result
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                imap.logout()

    def settings_toml(self) -> str:
        """The [bounces] mailbox lines a newsletter needs to read this server."""
        return (
            f'imap_host = "127.0.0.1"\nimap_port = {self.port}\nimap_security = "tls"\n'
            f'imap_username = "{USER}"\nimap_ca_file = "{self.ca_file}"\n'
        )
