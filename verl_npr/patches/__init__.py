"""Patches of host code, one module per target; each is listed in LEDGER.md and checks the host version."""
