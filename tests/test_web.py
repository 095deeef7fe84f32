"""`mailer serve` in-process, through the framework's test client: every route, every bad
token and every abuse case, checked against what is really stored in the SQLite file."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import draft_dir
from db_helpers import engine_for
from mailer import config, tokens, urls
from mailer.config import Settings
from mailer.store.database import open_db
from subscriber_helpers import Cli, fails, ok, query
from web_helpers import (
    ISSUE,
    PEOPLE,
    body_links,
    delivering_client,
    mailto_token,
    message_to,
    messages,
    newsletter_with_a_send,
    recipient,
)
from web_helpers import unsubscribe_link as link_for

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


class Web:
    """The app on a test client, plus the newsletter it serves."""

    def __init__(self, settings: Settings, now: list[float]) -> None:
        self.settings = settings
        self.now = now
        self.client = delivering_client(settings, now)
        self.database = self.client.postman.database
        self.client.__enter__()

    def path(self, url: str) -> str:
        assert url.startswith(self.settings.base_url), url
        return url.removeprefix(self.settings.base_url)

    def get(self, url: str, **kw: object) -> object:
        return self.client.get(self.path(url) if url.startswith("http") else url, **kw)  # type: ignore[arg-type]

    def post(self, url: str, **kw: object) -> object:
        return self.client.post(self.path(url) if url.startswith("http") else url, **kw)  # type: ignore[arg-type]

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.database.close()


@pytest.fixture
def web(cli: Cli, newsletter: Path) -> Iterator[Web]:
    newsletter_with_a_send(cli, newsletter)
    now = [1_800_000_000.0]
    served = Web(config.load(newsletter), now)
    yield served
    served.close()


def membership(root: Path, email: str, slug: str) -> str:
    rows = query(
        root,
        "SELECT m.status FROM membership m JOIN subscriber s ON s.id = m.subscriber_id "
        "JOIN mailing_list l ON l.id = m.list_id WHERE s.email = ? AND l.slug = ?",
        email,
        slug,
    )
    return rows[0][0] if rows else "none"


def status(root: Path, email: str) -> str:
    return str(query(root, "SELECT status FROM subscriber WHERE email = ?", email)[0][0])


def main_text(html: str) -> str:
    found = re.search(r"<main.*?</main>", html, re.S)
    assert found, html
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(0)).split())


def outbox_web(root: Path) -> list[Path]:
    return sorted((root / "outbox" / "_web").glob("*.eml"))


# --- the archive and the issues ----------------------------------------------------------------


def test_the_archive_shows_published_issues_only(web: Web, cli: Cli) -> None:
    page = web.client.get("/")
    assert page.status_code == 200
    assert "November 2025" in page.text  # 2025-11 was sent: published
    assert "Training and events" in page.text or "In this issue:" in page.text
    assert "December 2021" not in page.text  # 2021-12 is a draft
    assert web.client.get("/2021-12/").status_code == 404
    assert "2021-12" not in web.client.get("/feed.xml").text
    ok(cli("publish", "2021-12"))
    assert "December 2021" in web.client.get("/").text
    assert web.client.get("/2021-12/").status_code == 200
    assert "2021-12" in web.client.get("/feed.xml").text
    assert "already published" in ok(cli("publish", "2021-12")).stdout


def test_the_archive_lists_newest_first_with_dates_and_section_titles(web: Web, cli: Cli) -> None:
    ok(cli("publish", "2021-12"))
    text = main_text(web.client.get("/").text)
    assert text.index("November 2025") < text.index("December 2021")
    assert "In this issue:" in text


def test_an_issue_is_served_with_its_images_and_nothing_else(web: Web) -> None:
    page = web.client.get(f"/{ISSUE}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "%%MAILER_" not in page.text
    assert "<script" not in page.text.lower()
    alias = web.client.get(f"/issues/{ISSUE}/", follow_redirects=False)
    assert (
        alias.status_code == 308
        and alias.headers["location"] == f"{web.settings.base_url}/{ISSUE}/"
    )
    for path in (
        f"/{ISSUE}/issue.yaml",
        f"/{ISSUE}/../mailer.toml",
        f"/{ISSUE}/%2e%2e/mailer.toml",
    ):
        assert web.client.get(path).status_code == 404, path


def test_images_of_a_published_issue_are_served(web: Web, cli: Cli, newsletter: Path) -> None:
    ok(cli("publish", "2021-12"))
    images = sorted((newsletter / "issues" / "2021-12" / "images").glob("*.png"))
    answer = web.client.get(f"/2021-12/images/{images[0].name}")
    assert answer.status_code == 200
    assert answer.content == images[0].read_bytes()
    assert web.client.get("/2021-12/images/missing.png").status_code == 404


def test_build_all_leaves_drafts_out_of_the_static_archive_and_feed(
    cli: Cli, newsletter: Path
) -> None:
    ok(cli("build", "--all"))
    archive = (newsletter / "build" / "index.html").read_text(encoding="utf-8")
    feed = (newsletter / "build" / "feed.xml").read_text(encoding="utf-8")
    assert "No issues have been published yet." in archive
    assert "<entry>" not in feed
    # A draft's preview is built outside build/, so a copy of build/ never carries it.
    assert (draft_dir(newsletter, "2021-12") / "index.html").is_file()
    assert not (newsletter / "build" / "2021-12").exists()
    ok(cli("publish", "2021-12"))
    assert (newsletter / "build" / "2021-12" / "index.html").is_file()
    assert not draft_dir(newsletter, "2021-12").exists()
    ok(cli("build", "--all"))
    archive = (newsletter / "build" / "index.html").read_text(encoding="utf-8")
    assert "December 2021" in archive and "November 2025" not in archive
    assert not (newsletter / "build" / "2025-11").exists()


def test_a_rehearsal_send_leaves_publishing_to_mailer_publish(web: Web) -> None:
    rows = query(web.settings.root, "SELECT slug, published_by FROM publication")
    assert rows == [(ISSUE, "command")]


def test_publishing_an_unknown_issue_fails_with_one_line(cli: Cli) -> None:
    result = cli("publish", "2030-01")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.splitlines() == [
        "issues/2030-01/issue.yaml: no issue '2030-01' (known issues: 2021-12, 2025-11)"
    ]


# --- unsubscribe ------------------------------------------------------------------------------


def test_the_unsubscribe_page_changes_nothing_on_get(web: Web) -> None:
    root = web.settings.root
    link = link_for(root, PEOPLE[0])
    for _ in range(3):  # a link scanner opening it again and again
        page = web.get(link)
        assert page.status_code == 200
    text = main_text(page.text)
    assert "am•••a@example.org" in text and PEOPLE[0] not in page.text
    assert "All practitioners" in text
    assert "Unsubscribe from this list" in text and "Unsubscribe from everything" in text
    assert membership(root, PEOPLE[0], "all") == "subscribed"
    assert query(root, "SELECT count(*) FROM unsubscription") == [(0,)]


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_unsubscribe_rfc_8058(web: Web, encoding: str) -> None:
    root = web.settings.root
    link = link_for(root, PEOPLE[0])
    kw: dict[str, object] = (
        {"data": ONE_CLICK}
        if encoding == "urlencoded"
        else {"files": {"List-Unsubscribe": (None, "One-Click")}}
    )
    web.client.cookies.clear()
    answer = web.post(link, follow_redirects=False, **kw)
    assert answer.status_code == 200  # no redirect, no cookie needed
    assert "set-cookie" not in answer.headers
    assert membership(root, PEOPLE[0], "all") == "unsubscribed"
    assert status(root, PEOPLE[0]) == "active"  # from the list, not from everything
    again = web.post(link, follow_redirects=False, **kw)
    assert again.status_code == 200
    rows = query(root, "SELECT method, list_id IS NOT NULL, send_id FROM unsubscription")
    assert rows == [("one-click", 1, 1)]  # recorded once: repeating changed nothing
    assert membership(root, PEOPLE[1], "all") == "subscribed"


def test_the_page_buttons_unsubscribe_from_the_list_or_everything(web: Web) -> None:
    root = web.settings.root
    page = web.post(link_for(root, PEOPLE[0]), data={"scope": "list"})
    assert page.status_code == 200 and "is unsubscribed" in main_text(page.text)
    assert membership(root, PEOPLE[0], "all") == "unsubscribed"
    page = web.post(link_for(root, PEOPLE[1]), data={"scope": "all"})
    assert "unsubscribed from everything" in main_text(page.text)
    assert status(root, PEOPLE[1]) == "unsubscribed"
    methods = query(root, "SELECT method, list_id FROM unsubscription ORDER BY id")
    assert methods == [("web-page", 1), ("web-page", None)]


def _tampered(token: str) -> str:
    payload, _, mac = token.partition(".")
    first, _, rest = payload.partition("-")
    return f"{int(first) + 1}-{rest}.{mac}"


def test_bad_tokens_get_a_friendly_400_and_change_nothing(web: Web) -> None:
    root = web.settings.root
    token = link_for(root, PEOPLE[0]).rpartition("/")[2]
    key = web.settings.require_secret_key()
    wrong_purpose = tokens.make(key, tokens.PREFERENCES, 1, 1)
    proof = tokens.make(key, tokens.UNSUBSCRIBE, 0, 0)
    other_key = tokens.make(b"another key", tokens.UNSUBSCRIBE, 1, 1)
    for bad in (_tampered(token), token[:-3], "garbage", wrong_purpose, proof, other_key, "1-1."):
        for method in ("get", "post"):
            kw = {"data": ONE_CLICK} if method == "post" else {}
            answer = getattr(web.client, method)(f"/unsubscribe/{bad}", **kw)
            assert answer.status_code == 400, (bad, method)
            assert "This link does not work" in answer.text
            assert "Nothing was changed" in answer.text
            assert "Traceback" not in answer.text
    assert query(root, "SELECT count(*) FROM membership WHERE status = 'unsubscribed'") == [(0,)]
    assert query(root, "SELECT count(*) FROM unsubscription") == [(0,)]


def test_the_mailto_unsubscribe_is_honoured_by_a_command(web: Web, cli: Cli) -> None:
    root = web.settings.root
    token = mailto_token(root, PEOPLE[2])
    assert (
        "Unsubscribed ch•••e@example.org"
        in ok(cli("subscribers", "unsubscribe", "--token", token)).stdout
    )
    assert membership(root, PEOPLE[2], "all") == "unsubscribed"
    assert "already" in ok(cli("subscribers", "unsubscribe", "--token", token)).stdout
    assert query(root, "SELECT method FROM unsubscription") == [("email",)]
    fails(cli("subscribers", "unsubscribe", "--token", _tampered(token)), "not valid")
    fails(cli("subscribers", "unsubscribe", PEOPLE[0], "--token", token), "not both")
    fails(cli("subscribers", "unsubscribe"), "--token")


def test_an_erased_persons_link_shows_nothing(web: Web, cli: Cli) -> None:
    link = link_for(web.settings.root, PEOPLE[0])
    ok(cli("subscribers", "erase", PEOPLE[0], "--yes"))
    for answer in (web.get(link), web.post(link, data=ONE_CLICK)):
        assert answer.status_code == 200
        assert "nothing to unsubscribe" in main_text(answer.text)


def test_the_generic_unsubscribe_page_explains(web: Web) -> None:
    page = web.client.get("/unsubscribe")
    assert page.status_code == 200 and "Manage your subscription" in page.text


# --- headers and logs ---------------------------------------------------------------------


def test_security_headers(web: Web) -> None:
    personal = web.get(link_for(web.settings.root, PEOPLE[0]))
    public = web.client.get("/")
    for answer in (personal, public):
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
    assert personal.headers["x-robots-tag"].startswith("noindex")
    assert personal.headers["cache-control"] == "no-store"
    assert "'unsafe-inline'" not in personal.headers["content-security-policy"]
    assert "x-robots-tag" not in public.headers
    for path in ("/subscribe", "/manage", "/unsubscribe"):
        assert web.client.get(path).headers["x-robots-tag"].startswith("noindex")


def test_the_access_log_has_no_tokens_or_addresses(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailer.web")
    link = link_for(web.settings.root, PEOPLE[0])
    token = link.rpartition("/")[2]
    web.get(link)
    web.post(link, data=ONE_CLICK)
    web.client.post("/manage", data={"email": PEOPLE[1]})
    web.client.post(
        "/subscribe", data={"email": "new@example.org", "lists": "all", "consent": "yes"}
    )
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "GET /unsubscribe/{token} 200" in logged
    assert "POST /unsubscribe/{token} 200" in logged
    assert token not in logged
    for address in (PEOPLE[0], PEOPLE[1], "new@example.org"):
        assert address not in logged


def test_healthz_and_the_stylesheet(web: Web) -> None:
    assert web.client.get("/healthz").text == "ok\n"
    css = web.client.get("/site.css")
    assert css.headers["content-type"].startswith("text/css")
    assert web.settings.brand.primary in css.text and ":focus-visible" in css.text


def test_unknown_pages_and_methods_get_html_pages(web: Web) -> None:
    missing = web.client.get("/no/such/page")
    assert missing.status_code == 404 and "Page not found" in missing.text
    assert web.client.post("/").status_code == 405


def test_the_accessibility_statement(web: Web) -> None:
    page = web.client.get("/accessibility")
    assert page.status_code == 200
    text = main_text(page.text)
    for words in ("WCAG", "2.2", "axe-core", "Enforcement procedure"):
        assert words in text


# --- preferences ----------------------------------------------------------------------------


def preferences_path(web: Web, address: str) -> str:
    (subscriber_id,) = query(
        web.settings.root, "SELECT id FROM subscriber WHERE email = ?", address
    )[0]
    token = tokens.make(web.settings.require_secret_key(), tokens.PREFERENCES, subscriber_id)
    return web.path(urls.preferences_url(web.settings, token))


def test_the_link_in_every_issue_opens_the_preferences_page(web: Web) -> None:
    message = message_to(web.settings.root, PEOPLE[0])
    (link,) = [u for u in body_links(message) if "/preferences/" in u]
    page = web.get(link)
    assert page.status_code == 200
    text = main_text(page.text)
    assert "am•••a@example.org" in text
    assert "All practitioners" in text and "Schools DSLs" in text
    assert "Board members" not in text  # not public, and they are not on it


def test_preferences_change_lists_and_details(web: Web) -> None:
    root = web.settings.root
    path = preferences_path(web, PEOPLE[0])
    page = web.client.post(
        path,
        data={
            "action": "save",
            "name": "Amira Hussain",
            "organisation": "NHS",
            "lists": ["schools"],
        },
    )
    assert page.status_code == 200 and "Your choices are saved" in page.text
    assert membership(root, PEOPLE[0], "all") == "unsubscribed"
    assert membership(root, PEOPLE[0], "schools") == "subscribed"
    assert query(root, "SELECT name, organisation FROM subscriber WHERE email = ?", PEOPLE[0]) == [
        ("Amira Hussain", "NHS")
    ]
    consent = query(
        root,
        "SELECT c.basis, c.source, c.confirmed_at IS NOT NULL FROM consent c "
        "JOIN mailing_list l ON l.id = c.list_id WHERE l.slug = 'schools'",
    )
    assert consent == [("consent", "preferences page", 1)]
    # A private list cannot be joined by naming it in the form.
    web.client.post(path, data={"action": "save", "lists": ["schools", "board"]})
    assert membership(root, PEOPLE[0], "board") == "none"


def test_preferences_unsubscribe_from_everything_and_download_the_data(web: Web, cli: Cli) -> None:
    root = web.settings.root
    path = preferences_path(web, PEOPLE[0])
    page = web.client.post(path, data={"action": "unsubscribe-all"})
    assert "unsubscribed from everything" in page.text
    assert status(root, PEOPLE[0]) == "unsubscribed"
    # The full record needs the fresh link "manage by email" sends (test_web_fresh_link.py).
    web.client.post("/manage", data={"email": PEOPLE[0]})
    (fresh,) = [u for u in body_links(message_to(root, PEOPLE[0], "_web")) if "/preferences/" in u]
    data = web.get(fresh + "/data.json")
    assert data.status_code == 200
    assert "attachment" in data.headers["content-disposition"]
    shown = json.loads(ok(cli("subscribers", "show", PEOPLE[0], "--json")).stdout)
    assert data.json() == shown
    assert shown["unsubscribes"] == [
        {"at": shown["unsubscribes"][0]["at"], "how": "preferences", "list": "everything"}
    ]


def test_preferences_with_a_bad_token(web: Web) -> None:
    key = web.settings.require_secret_key()
    for token in (
        "1.AAAA",
        tokens.make(key, tokens.UNSUBSCRIBE, 1),
        tokens.make(key, tokens.PREFERENCES, 999),
    ):
        for answer in (
            web.client.get(f"/preferences/{token}"),
            web.client.post(f"/preferences/{token}", data={"action": "unsubscribe-all"}),
            web.client.get(f"/preferences/{token}/data.json"),
        ):
            assert answer.status_code == 400
    assert status(web.settings.root, PEOPLE[0]) == "active"


# --- sign-up with double opt-in -------------------------------------------------------------


SIGNUP = {
    "email": "Dana@Example.org",
    "name": "Dana",
    "organisation": "School",
    "lists": "schools",
    "consent": "yes",
}


def confirmation_link(root: Path, index: int = -1) -> str:
    message = message_to(root, "dana@example.org", "_web")
    (link,) = [u for u in body_links(message) if "/confirm/" in u]
    return link


def test_signing_up_sends_a_confirmation_and_only_the_post_confirms(web: Web) -> None:
    root = web.settings.root
    form = web.client.get("/subscribe")
    assert "Schools DSLs" in form.text and "Board members" not in form.text
    assert web.settings.web.consent in form.text
    page = web.client.post("/subscribe", data=SIGNUP)
    assert page.status_code == 200 and "Check your email" in page.text
    message = message_to(root, "dana@example.org", "_web")
    assert message["Subject"] == f"Confirm your subscription to {web.settings.name}"
    link = confirmation_link(root)
    for _ in range(2):  # a scanner following the link
        shown = web.get(link)
        assert shown.status_code == 200 and "Confirm my subscription" in shown.text
    assert membership(root, "dana@example.org", "schools") == "none"
    done = web.post(link)
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert membership(root, "dana@example.org", "schools") == "subscribed"
    evidence = query(
        root,
        "SELECT email, wording, requested_ip, confirmed_ip, confirmed_at IS NOT NULL, "
        "subscriber_id IS NOT NULL FROM signup",
    )
    assert evidence == [(None, web.settings.web.consent, "testclient", "testclient", 1, 1)]
    consent = query(
        root,
        "SELECT basis, confirmed_at IS NOT NULL FROM consent c "
        "JOIN subscriber s ON s.id = c.subscriber_id WHERE s.email = 'dana@example.org'",
    )
    assert consent == [("consent", 1)]
    again = web.post(link)  # a second press changes nothing
    assert again.status_code == 200
    assert query(
        root,
        "SELECT count(*) FROM membership m "
        "JOIN subscriber s ON s.id = m.subscriber_id WHERE s.email = 'dana@example.org'",
    ) == [(1,)]


def test_a_confirmation_link_expires_after_seven_days(web: Web) -> None:
    web.client.post("/subscribe", data=SIGNUP)
    link = confirmation_link(web.settings.root)
    web.now[0] += 8 * 86400
    for answer in (web.get(link), web.post(link)):
        assert answer.status_code == 400 and "This link has expired" in answer.text
    assert membership(web.settings.root, "dana@example.org", "schools") == "none"


def test_the_answer_is_the_same_whether_or_not_the_address_is_known(web: Web) -> None:
    root = web.settings.root
    known = web.client.post("/subscribe", data=dict(SIGNUP, email=PEOPLE[0], lists="all"))
    unknown = web.client.post("/subscribe", data=dict(SIGNUP, email="zed@example.org", lists="all"))
    assert main_text(known.text) == main_text(unknown.text)
    assert known.status_code == unknown.status_code == 200
    # Already confirmed on that list: no email, nothing changed.
    assert [recipient(m) for m in messages(root, "_web")] == ["zed@example.org"]
    assert query(root, "SELECT name FROM subscriber WHERE email = ?", PEOPLE[0]) == [("amira",)]
    manage_known = web.client.post("/manage", data={"email": PEOPLE[0]})
    manage_unknown = web.client.post("/manage", data={"email": "nobody@example.org"})
    assert main_text(manage_known.text) == main_text(manage_unknown.text)


def test_an_unsubscribed_person_can_only_come_back_by_confirming(web: Web) -> None:
    root = web.settings.root
    web.post(link_for(root, PEOPLE[0]), data={"scope": "all"})
    web.client.post("/subscribe", data=dict(SIGNUP, email=PEOPLE[0], lists="all"))
    assert status(root, PEOPLE[0]) == "unsubscribed"
    message = message_to(root, PEOPLE[0], "_web")
    (link,) = [u for u in body_links(message) if "/confirm/" in u]
    web.post(link)
    assert status(root, PEOPLE[0]) == "active"
    assert membership(root, PEOPLE[0], "all") == "subscribed"


def test_the_honeypot_and_bad_input(web: Web) -> None:
    root = web.settings.root
    trapped = web.client.post("/subscribe", data=dict(SIGNUP, website="http://spam.example"))
    assert trapped.status_code == 200 and "Check your email" in trapped.text
    assert outbox_web(root) == []
    for data, words in (
        (dict(SIGNUP, email="not an address"), "not a valid email address"),
        (dict(SIGNUP, consent=""), "tick the box"),
        (dict(SIGNUP, lists="board"), "choose at least one list"),
        ({k: v for k, v in SIGNUP.items() if k != "lists"}, "choose at least one list"),
    ):
        answer = web.client.post("/subscribe", data=data)
        assert answer.status_code == 400, data
        assert words in answer.text and 'role="alert"' in answer.text
    assert outbox_web(root) == []


def test_one_confirmation_email_per_cooling_off_period(web: Web) -> None:
    for _ in range(3):
        assert web.client.post("/subscribe", data=SIGNUP).status_code == 200
    assert len(outbox_web(web.settings.root)) == 1


def test_rate_limits_per_ip_and_per_address_hold_in_the_database(
    web: Web, newsletter: Path
) -> None:
    limit = web.settings.web.per_ip_per_hour
    for i in range(limit):
        answer = web.client.post("/subscribe", data=dict(SIGNUP, email=f"p{i}@example.org"))
        assert answer.status_code == 200
    assert len(outbox_web(newsletter)) == limit
    # Past the limit the page answers as before, but no more mail goes.
    held = web.client.post("/subscribe", data=dict(SIGNUP, email="late@example.org"))
    assert held.status_code == 200 and "Check your email" in held.text
    # A second app on the same database (another process) sees the same count.
    other = Web(config.load(newsletter), web.now)
    try:
        assert (
            other.client.post("/subscribe", data=dict(SIGNUP, email="x@example.org")).status_code
            == 200
        )
    finally:
        other.close()
    assert len(outbox_web(newsletter)) == limit
    assert query(newsletter, "SELECT count(*) FROM web_mail WHERE mailbox_key LIKE '%@%'") == [(0,)]


def test_per_address_limit(web: Web, newsletter: Path) -> None:
    text = (newsletter / "mailer.toml").read_text(encoding="utf-8")
    (newsletter / "mailer.toml").write_text(
        text + "\n[web]\nper_ip_per_hour = 100\nper_address_per_day = 2\n"
    )
    strict = Web(config.load(newsletter), web.now)
    try:
        codes = []
        for _ in range(3):
            codes.append(strict.client.post("/manage", data={"email": PEOPLE[0]}).status_code)
            web.now[0] += 61 * 60  # past the cooling-off period
    finally:
        strict.close()
    assert codes == [200, 200, 200]
    assert len(outbox_web(newsletter)) == 2


def test_a_disposable_domain_is_refused(cli: Cli, newsletter: Path) -> None:
    newsletter_with_a_send(cli, newsletter)
    (newsletter / "disposable.txt").write_text("# throwaway domains\nmailinator.com\n")
    text = (newsletter / "mailer.toml").read_text(encoding="utf-8")
    (newsletter / "mailer.toml").write_text(text + '\n[web]\nblocklist = "disposable.txt"\n')
    served = Web(config.load(newsletter), [1_800_000_000.0])
    try:
        answer = served.client.post("/subscribe", data=dict(SIGNUP, email="x@mailinator.com"))
    finally:
        served.close()
    assert answer.status_code == 400 and "not accepted" in answer.text
    assert outbox_web(newsletter) == []


def test_settings_for_the_web_are_checked(newsletter: Path) -> None:
    text = (newsletter / "mailer.toml").read_text(encoding="utf-8")
    for extra, words in (
        ("confirm_days = 0", "web.confirm_days"),
        ('blocklist = "missing.txt"', "web.blocklist"),
        ("track_clicks = 'yes'", "web.track_clicks"),
        ('accessibility_reviewed = "2026-12-01"', "web.accessibility_reviewed"),
        ("colour = 1", "web.colour"),
    ):
        (newsletter / "mailer.toml").write_text(f"{text}\n[web]\n{extra}\n")
        with pytest.raises(config.ConfigError, match=re.escape(words)):
            config.load(newsletter)


def test_erasing_a_person_deletes_their_sign_ups(web: Web, cli: Cli) -> None:
    web.client.post("/subscribe", data=SIGNUP)
    web.post(confirmation_link(web.settings.root))
    web.client.post("/subscribe", data=dict(SIGNUP, email="eve@example.org"))
    ok(cli("subscribers", "erase", "dana@example.org", "--yes"))
    ok(cli("subscribers", "erase", "eve@example.org", "--yes"))
    assert query(web.settings.root, "SELECT count(*) FROM signup") == [(0,)]


# --- manage by email ----------------------------------------------------------------------


def test_manage_by_email_sends_a_working_preferences_link(web: Web) -> None:
    root = web.settings.root
    assert "Email me a link" in web.client.get("/manage").text
    web.client.post("/manage", data={"email": PEOPLE[1].upper()})
    web.client.post("/manage", data={"email": "nobody@example.org"})
    assert [recipient(m) for m in messages(root, "_web")] == [PEOPLE[1]]
    message = message_to(root, PEOPLE[1], "_web")
    (link,) = [u for u in body_links(message) if "/preferences/" in u]
    assert "be•••n@example.org" in web.get(link).text
    assert web.client.post("/manage", data={"email": "bad address"}).status_code == 400


# --- lists ----------------------------------------------------------------------------------


def test_lists_can_be_made_public_or_not(web: Web, cli: Cli) -> None:
    assert "public:        no" in ok(cli("lists", "show", "board")).stdout
    ok(cli("lists", "public", "board"))
    assert "Board members" in web.client.get("/subscribe").text
    ok(cli("lists", "public", "board", "--off"))
    assert "Board members" not in web.client.get("/subscribe").text
    fails(cli("lists", "public", "nope"), "no list 'nope'")


# --- counted links (track_clicks) -----------------------------------------------------------


def _track(newsletter: Path) -> Settings:
    text = (newsletter / "mailer.toml").read_text(encoding="utf-8")
    (newsletter / "mailer.toml").write_text(text + "\n[web]\ntrack_clicks = true\n")
    return config.load(newsletter)


def test_click_counting_is_off_by_default(web: Web) -> None:
    from mailer.render import compile_slug

    compiled = compile_slug(web.settings, ISSUE)
    assert "/c/" not in compiled.email_html


def test_counted_links_redirect_only_to_the_issues_urls_and_count_no_one(
    cli: Cli, newsletter: Path
) -> None:
    from mailer.render import compile_slug
    from mailer.store import clicks

    plain = compile_slug(config.load(newsletter), ISSUE).email_html.replace("&amp;", "&")
    settings = _track(newsletter)
    compiled = compile_slug(settings, ISSUE)
    counted = re.findall(r'href="(https://news\.example\.org/c/[^"]+)"', compiled.email_html)
    assert len(counted) > 10
    assert "/c/" not in compiled.web_html and "/c/" not in compiled.email_text
    served = Web(settings, [1_800_000_000.0])
    try:
        first = served.get(counted[0].replace("&amp;", "&"), follow_redirects=False)
        assert first.status_code == 302
        target = first.headers["location"]
        assert target.startswith("https://") and f'href="{target}"' in plain
        served.get(counted[0].replace("&amp;", "&"), follow_redirects=False)
        token = counted[0].rpartition("/")[2]
        body, _, mac = token.partition(".")
        evil = tokens.sign_text(b"another key", tokens.CLICK, f"{ISSUE}\nhttps://evil.example/")
        for bad in (f"{body}x.{mac}", evil, "abc", f"{body}.{mac[:-2]}"):
            answer = served.client.get(f"/c/{bad}", follow_redirects=False)
            assert answer.status_code == 400 and "location" not in answer.headers
    finally:
        served.close()
    with open_db(settings) as db, db.session() as session:
        counts = clicks.clicks_per_link(session, ISSUE)
        assert counts == [clicks.LinkCount(target, 2)]
        assert clicks.clicks_per_issue(session) == {ISSUE: 2}
    engine = engine_for(newsletter)
    try:
        columns = [c["name"] for c in sa.inspect(engine).get_columns("link_click")]
    finally:
        engine.dispose()
    assert columns == ["id", "slug", "url", "clicks"]  # nothing about who clicked


# --- make demo ------------------------------------------------------------------------------


def test_the_demo_ends_with_an_unsubscribe_url_that_works_in_mailer_serve(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from mailer.cli import demo

    demo.run(settings)
    printed = capsys.readouterr().out
    assert "mailer serve --port 8000" in printed
    (url,) = re.findall(r"http://127\.0\.0\.1:8000/unsubscribe/\S+", printed)
    served = Web(settings, [1_800_000_000.0])
    try:
        path = url.removeprefix("http://127.0.0.1:8000")
        page = served.client.get(path)
        assert page.status_code == 200 and "Demo practitioners" in page.text
        assert served.client.post(path, data=ONE_CLICK).status_code == 200
        assert "November 2025" in served.client.get("/").text  # the send published it
    finally:
        served.close()
    archive = (settings.build_dir / "index.html").read_text(encoding="utf-8")
    assert "November 2025" in archive and "December 2021" not in archive


# --- tokens and the migration ---------------------------------------------------------------


def test_confirmation_tokens_expire_and_others_are_refused_for_any_other_purpose() -> None:
    from mailer.errors import BadToken, ExpiredToken

    key, now = b"key", 1_800_000_000.0
    token = tokens.make_expiring(key, tokens.CONFIRM, now, 42)
    week = 7 * 86400
    assert tokens.read_expiring(
        key, tokens.CONFIRM, token, now=now + week, max_age_seconds=week
    ) == (42,)
    with pytest.raises(ExpiredToken):
        tokens.read_expiring(
            key, tokens.CONFIRM, token, now=now + week + 3600, max_age_seconds=week
        )
    for purpose in (tokens.UNSUBSCRIBE, tokens.PREFERENCES, tokens.CLICK):
        with pytest.raises(BadToken) as caught:
            tokens.read_expiring(key, purpose, token, now=now, max_age_seconds=week)
        assert not isinstance(caught.value, ExpiredToken)
    text = tokens.sign_text(key, tokens.CLICK, "2025-11\nhttps://example.org/a?b=c")
    assert tokens.read_text(key, tokens.CLICK, text) == "2025-11\nhttps://example.org/a?b=c"
    with pytest.raises(BadToken):
        tokens.read_text(key, tokens.CONFIRM, text)


@pytest.mark.empty_database
def test_the_migration_publishes_issues_already_sent(settings: Settings) -> None:
    from mailer.store import migrate

    migrate.upgrade(settings, to="0004")
    for slug, started in (("2025-10", "2025-10-07 09:00:00.000000"), ("2025-11", None)):
        query(
            settings.root,
            "INSERT INTO send (slug, content_hash, subject, html, text, status, "
            "status_reason, approved_by, created_at, started_at) "
            "VALUES (?, 'h', 's', '', '', 'sent', '', 'x', '2025-10-01 09:00:00', ?)",
            slug,
            started,
        )
    migrate.upgrade(settings)
    rows = query(settings.root, "SELECT slug, published_at, published_by FROM publication")
    assert rows == [("2025-10", "2025-10-07 09:00:00.000000", "send")]
    assert query(settings.root, "SELECT count(*) FROM mailing_list WHERE public") == [(0,)]


def test_a_huge_form_is_refused_before_it_is_read(web: Web) -> None:
    answer = web.client.post(
        "/subscribe",
        content=b"email=" + b"a" * 100_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 413
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert outbox_web(web.settings.root) == []


def test_the_sign_up_page_without_public_lists(cli: Cli, newsletter: Path) -> None:
    served = Web(config.load(newsletter), [1_800_000_000.0])
    try:
        page = served.client.get("/subscribe")
        assert page.status_code == 200 and "not open at the moment" in page.text
        refused = served.client.post("/subscribe", data=SIGNUP)
        assert refused.status_code == 400 and "not open at the moment" in refused.text
    finally:
        served.close()
