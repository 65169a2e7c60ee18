"""Scoring and efficiency measurement helpers."""
