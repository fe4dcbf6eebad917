"""Saves and archives of bases (hosting guide fiches 6, 10, 12). Mixed into CampusApplication."""

from __future__ import annotations


class BackupUseCases:
    """Mixed into CampusApplication."""
