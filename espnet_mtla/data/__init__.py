"""Corpus preparation helpers and the synthetic mini corpus."""
