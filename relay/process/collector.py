"""The cyclic garbage collector: what start-up built is set aside, never scanned again.

A started node holds tens of thousands of objects that live as long as the
process: modules, classes, the config's models, the listeners and the parts
of the node. Python's cyclic collector walks every one of them on each full
collection, which then stalls the event loop (a burst's deliveries wait
behind it) for time proportional to all of them rather than to what changed.
Frozen, they are left out of every later collection; they are still freed by
reference counting if they ever go.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> int:
    """Collect start-up's garbage once, then freeze every object still tracked.

    Call once the node has started (listeners bound, parts built): objects
    made later (connections, messages) are collected as usual. Returns how
    many objects are frozen now.
    """
    # Cycles left over from imports and config loading are freed first: once
    # frozen, a cycle would never be collected.
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
