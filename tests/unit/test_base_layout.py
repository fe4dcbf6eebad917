"""A tripwire for the layout of a base's library snapshot (campus/aggregates/school_base.py).

A snapshot is used only if it was taken with the current layout, ``Base.SNAPSHOT_LAYOUT`` (and the record
kinds, and the library's version, which the layout includes by itself). Only a person can tell whether a
change to Base changes what a replay gives; this test makes them look: it fails whenever the source of
the Base class changes.

When it fails: if what a Base holds, or what one of its event methods assigns, changed (even a fix),
bump ``Base.SNAPSHOT_LAYOUT`` — snapshots of the old layout are then ignored, and replaced in the
background. Either way, put the new layout and digest below.
"""

from __future__ import annotations

import hashlib
import inspect

from campus.aggregates.school_base import Base, snapshot_layout, snapshot_topic

# Base.SNAPSHOT_LAYOUT -> SHA-256 of the source of the Base class it was decided for.
REVIEWED = {1: "3b05d37fc32972b1e55889b32bf762eba0ba45936e6b0b4e71be7d40ee41613e"}


def test_a_change_to_base_was_checked_against_its_snapshot_layout() -> None:
    digest = hashlib.sha256(inspect.getsource(Base).encode()).hexdigest()
    assert REVIEWED.get(Base.SNAPSHOT_LAYOUT) == digest, (
        "Base changed: if what it holds or what an event method assigns changed, bump Base.SNAPSHOT_LAYOUT; "
        f"then set REVIEWED = {{{Base.SNAPSHOT_LAYOUT}: {digest!r}}} in this file (see its docstring)")


def test_the_stored_topic_names_the_layout_and_resolves_to_the_snapshot_class() -> None:
    from eventsourcing.utils import get_topic, resolve_topic

    assert snapshot_layout().startswith(f"{Base.SNAPSHOT_LAYOUT}-")
    topic = f"campus.aggregates.school_base:Base.Snapshot@{snapshot_layout()}"
    assert get_topic(Base.Snapshot) == snapshot_topic() == topic
    assert resolve_topic(snapshot_topic()) is Base.Snapshot
