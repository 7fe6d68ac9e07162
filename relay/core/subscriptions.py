"""The subscription index: which connections of which instance listen to which keys.

Finding a message's recipients costs one lookup per key of the message; it
never scans the connections that do not listen.

It is built for many idle browsers with a few keys each, most of them heard by
one browser alone (a Phorge user's own key): a connection's keys are one
tuple that also names its instance, a key with a lone listener maps to that
listener itself rather than to a set, and a key string that several browsers
share is kept once (interned).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Generic, TypeVar

Conn = TypeVar("Conn")


class SubscriptionIndex(Generic[Conn]):
    """Maps (instance, key) to connections, and each connection to its instance and keys."""

    def __init__(self) -> None:
        """Start empty."""
        #: Per instance, per key: the lone connection listening, or a set of two or more.
        self._by_instance: dict[str, dict[str, Conn | set[Conn]]] = {}
        #: Per connection: its instance, then its keys (a tuple: smaller than a set
        #: and a second dict for the instance, and scanned only per command).
        self._keys_of: dict[Conn, tuple[str, ...]] = {}
        #: Subscriptions held by all connections together.
        self.total = 0

    def subscribe(
        self, conn: Conn, instance: str, keys: Iterable[str], limit: int | None = None
    ) -> tuple[list[str], int]:
        """Add ``keys`` to ``conn``'s subscriptions, up to ``limit`` keys in all.

        Returns the keys that were new, and how many were refused for the limit.
        """
        held = self._keys_of.get(conn)
        mine = set(held[1:]) if held else set()
        # Only an instance that gets a key is entered: browsers name instances
        # freely in their URL, and nothing must grow for names that hold nothing.
        by_key = self._by_instance.get(instance) or {}
        added = []
        refused = 0
        for key in keys:
            if key in mine:
                continue
            if limit is not None and len(mine) >= limit:
                refused += 1
                continue
            listening = by_key.get(key)
            if listening is None:
                by_key[key] = conn
            else:
                key = sys.intern(key)  # heard by several: one copy of the string for all
                if isinstance(listening, set):
                    listening.add(conn)
                else:
                    by_key[key] = {listening, conn}
            mine.add(key)
            added.append(key)
        if added:
            self.total += len(added)
            self._by_instance[instance] = by_key
            self._keys_of[conn] = (instance, *(held[1:] if held else ()), *added)
        return added, refused

    def unsubscribe(self, conn: Conn, keys: Iterable[str]) -> None:
        """Remove ``keys`` from ``conn``'s subscriptions; unknown keys are ignored."""
        held = self._keys_of.get(conn)
        if not held:
            return
        instance, *mine = held
        dropped = set(mine).intersection(keys)
        if not dropped:
            return
        for key in dropped:
            self._drop(instance, key, conn)
        kept = tuple(key for key in mine if key not in dropped)
        if kept:
            self._keys_of[conn] = (instance, *kept)
        else:
            del self._keys_of[conn]

    def forget(self, conn: Conn) -> None:
        """Remove every subscription of ``conn`` (it disconnected)."""
        held = self._keys_of.pop(conn, None)
        if held:
            for key in held[1:]:
                self._drop(held[0], key, conn)

    def keys_of(self, conn: Conn) -> frozenset[str]:
        """The keys ``conn`` is subscribed to."""
        held = self._keys_of.get(conn)
        return frozenset(held[1:]) if held else frozenset()

    def count(self, conn: Conn) -> int:
        """How many keys ``conn`` is subscribed to."""
        held = self._keys_of.get(conn)
        return len(held) - 1 if held else 0

    def recipients(self, instance: str, keys: Iterable[str]) -> list[Conn]:
        """Connections of ``instance`` subscribed to any of ``keys``, each once.

        Returns a new list, so delivering may change subscriptions safely.
        """
        by_key = self._by_instance.get(instance)
        if not by_key:
            return []
        found: set[Conn] | None = None
        for key in keys:
            listening = by_key.get(key)
            if listening is None:
                continue
            if isinstance(listening, set):
                found = set(listening) if found is None else found | listening
            elif found is None:
                found = {listening}
            else:
                found.add(listening)
        return list(found) if found else []

    def _drop(self, instance: str, key: str, conn: Conn) -> None:
        self.total -= 1
        by_key = self._by_instance[instance]
        listening = by_key[key]
        if isinstance(listening, set):
            listening.discard(conn)
            if len(listening) > 1:
                return
            # Back to a lone listener: no set kept for one connection.
            by_key[key] = listening.pop()
            return
        del by_key[key]
        if not by_key:
            del self._by_instance[instance]
