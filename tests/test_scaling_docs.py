"""The relay recipe of docs/scaling.md is one that works: Postfix's own tools read its
main.cf, master.cf and transport blocks without a complaint, and mailer reads its
[transport] block."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from conftest import REPO
from mailer import config

POSTCONF, POSTMAP = "/usr/sbin/postconf", "/usr/sbin/postmap"


def relay_section() -> str:
    text = (REPO / "docs" / "scaling.md").read_text(encoding="utf-8")
    return text.split("## A local relay in front of mailer", 1)[1].split("\n## ", 1)[0]


def block_after(section: str, heading: str, language: str) -> str:
    """The first ``language`` code block after the heading that contains ``heading``."""
    after = section.split(heading, 1)[1]
    found = re.search(rf"^```{language}\n(.*?)^```", after, re.DOTALL | re.MULTILINE)
    assert found is not None, f"no {language} block after {heading!r}"
    return found.group(1)


def test_postfix_reads_the_relay_recipe_without_a_complaint(tmp_path: Path) -> None:
    section = relay_section()
    main_cf = block_after(section, "`/etc/postfix/main.cf`", "conf")
    master_cf = block_after(section, "`/etc/postfix/master.cf`", "conf")
    transport = block_after(section, "`/etc/postfix/transport`", "conf")
    # The stock master.cf, which the recipe adds to, then the recipe's own services.
    shutil.copy("/etc/postfix/master.cf", tmp_path / "master.cf")
    with (tmp_path / "master.cf").open("a", encoding="utf-8") as f:
        f.write("\n" + master_cf)
    (tmp_path / "main.cf").write_text(
        main_cf.replace("/etc/postfix/transport", str(tmp_path / "transport")), encoding="utf-8"
    )
    (tmp_path / "transport").write_text(transport, encoding="utf-8")

    shown = subprocess.run(
        [POSTCONF, "-c", str(tmp_path), "-n"], capture_output=True, text=True, check=True
    )
    # postconf warns about any name it does not know ("unused parameter"), such as a limit
    # for a transport master.cf does not define.
    assert shown.stderr == ""
    for name in (
        "default_destination_concurrency_limit = 10",
        "microsoft_destination_concurrency_limit = 4",
        "google_destination_concurrency_limit = 8",
        "maximal_queue_lifetime = 2d",
    ):
        assert name in shown.stdout
    services = subprocess.run(
        [POSTCONF, "-c", str(tmp_path), "-M"], capture_output=True, text=True, check=True
    )
    assert services.stderr == ""
    assert re.search(r"(?m)^microsoft\s+unix\b.*\bsmtp", services.stdout)
    assert re.search(r"(?m)^google\s+unix\b.*\bsmtp", services.stdout)
    subprocess.run([POSTMAP, "-c", str(tmp_path), f"hash:{tmp_path}/transport"], check=True)
    for domain, transport_name in (
        ("council.example.gov.uk", "microsoft:"),
        ("gmail.com", "google:"),
    ):
        found = subprocess.run(
            [POSTMAP, "-c", str(tmp_path), "-q", domain, f"hash:{tmp_path}/transport"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert found.stdout.strip() == transport_name


def test_mailer_reads_its_side_of_the_relay_recipe(newsletter: Path) -> None:
    block = block_after(relay_section(), "### mailer's side", "toml")
    toml = newsletter / "mailer.toml"
    text = toml.read_text(encoding="utf-8")
    text = re.sub(r"\[transport\]\n[^\[]*", block + "\n", text)
    toml.write_text(text, encoding="utf-8")
    smtp = config.load(newsletter).transport
    assert smtp.name == "smtp"
    assert (smtp.smtp.host, smtp.smtp.port, smtp.smtp.security) == ("127.0.0.1", 25, "none")
    assert smtp.smtp.connections == 8
