"""Moving bases and users in and out: export files, loads, annexes, users file,
timetable transfers (hosting guide fiches 5 and 7). Mixed into CampusApplication."""

from __future__ import annotations


class ExchangeUseCases:
    """Mixed into CampusApplication."""
