"""What a person or the worker asks of a send: approval (:mod:`.approval`, what a send
requires; :mod:`.signoff`, approval requests mailed to the approvers and their decisions)
and the send service (:mod:`.service`), what the command line and the worker call.

This layer sits above the engine (:mod:`mailer.sending`), the preflight checks and the
subscribers it consults, so none of those imports it.
"""
