"""``mailer serve``: the public web side, an ASGI app made by :func:`create_app`.

:mod:`.app` builds the app (security headers, access log, error pages); :mod:`.pages`
serves what is public (archive, issues, feed, images, accessibility statement);
:mod:`.personal` serves the pages a personal link or a form leads to (unsubscribe,
preferences, sign-up and its confirmation, manage by email, counted links). Every path
comes from :mod:`mailer.urls`, like the links in emails.
"""

from mailer.web.app import create_app

__all__ = ["create_app"]
