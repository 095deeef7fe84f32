"""The database: engine and sessions, tables, migrations, and every query mailer makes.

Nothing outside this package writes SQL. The modules are grouped by table:

- :mod:`.database` opens the database and hands out sessions; :mod:`.migrate` upgrades it;
- :mod:`.models` declares the tables and :mod:`.status` the statuses stored in them;
- :mod:`.people`, :mod:`.joining` and :mod:`.suppression`: lists, subscribers, memberships,
  consent and the suppression list;
- :mod:`.sends`: sends, the lists they go to, and approvals;
- :mod:`.deliveries`: the per-recipient ledger;
- :mod:`.schedules`: schedules;
- :mod:`.for_sending`: everything the engine (``mailer.sending``) may ask of the above.

This file imports nothing, so ``import mailer.store.status`` stays cheap.
"""
