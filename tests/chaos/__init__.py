"""Fault-injection scenarios: each prints its ledger (see ``ledger.py``)."""
