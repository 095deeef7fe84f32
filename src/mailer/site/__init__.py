"""What is published: ``build/`` (issue pages, archive, feed, the training calendar) and
``mailer preview``. Every public URL and signed token is defined below every folder
(:mod:`mailer.urls`, :mod:`mailer.tokens`), so the links in emails and the pages that
answer them cannot drift apart."""
