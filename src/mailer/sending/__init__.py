"""Delivering a send: the engine, its ledger, rate limits, message bytes, the transports,
and alerts to ``alerts_to``.

:mod:`.engine` runs one send from its ledger through a transport (:mod:`.transports`).
Starting, approving and pausing a send is :mod:`mailer.operations`, the layer above.
"""
