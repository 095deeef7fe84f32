"""Subscribers: addresses, people, who may join a list, erasure, CSV import and export.

:mod:`.addresses` validates and normalises what people type; :mod:`.people` and
:mod:`.lists` are the operations behind ``mailer subscribers`` and ``mailer lists``;
:mod:`.csv_import` and :mod:`.csv_export` read and write spreadsheets.
"""
