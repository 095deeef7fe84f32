"""What is published: ``build/`` (issue pages, archive, feed), and every public URL and
signed token (:mod:`.urls`, :mod:`.tokens`), so the links in emails and the pages that
answer them cannot drift apart."""
