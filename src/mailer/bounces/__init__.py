"""Reading what comes back after a send (bounces, complaints, unsubscribe emails) and reporting.

:mod:`.parse` reads a message, :mod:`.process` ties it to a copy and commits the result,
:mod:`.policy` decides what changes, :mod:`.imap` reads the bounce mailbox, and
:mod:`.report` with :mod:`.report_html` summarise a send for the board.
"""
