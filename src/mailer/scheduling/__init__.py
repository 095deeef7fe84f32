"""Scheduled sends: rules (pure parsing), the runner (what is due), the worker (when to look)."""
