"""The durable state: the SQLite store and its schema upgrades (store.py), its load, snapshots and close (durable.py)."""
