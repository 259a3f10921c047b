"""Capture engines: take a heap snapshot through a ``ProcessHost``; no Kubernetes here."""
