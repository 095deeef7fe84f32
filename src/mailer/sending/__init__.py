"""Delivering an issue: approval, the send service, the engine, its ledger, rate limits,
message bytes and the transports.

:mod:`.service` is what the command line and the worker call; :mod:`.engine` runs one send
from its ledger through a transport (:mod:`.transports`).
"""
