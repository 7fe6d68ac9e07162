"""The subscription index: which connections of which instance listen to which keys.

Finding a message's recipients costs one lookup per key of the message; it
never scans the connections that do not listen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

Conn = TypeVar("Conn")


class SubscriptionIndex(Generic[Conn]):
    """Maps (instance, key) to connections, and each connection to its keys."""

    def __init__(self) -> None:
        """Start empty."""
        self._by_instance: dict[str, dict[str, set[Conn]]] = {}
        self._keys_of: dict[Conn, set[str]] = {}
        self._instance_of: dict[Conn, str] = {}
        #: Subscriptions held by all connections together.
        self.total = 0

    def subscribe(
        self, conn: Conn, instance: str, keys: Iterable[str], limit: int | None = None
    ) -> tuple[list[str], int]:
        """Add ``keys`` to ``conn``'s subscriptions, up to ``limit`` keys in all.

        Returns the keys that were new, and how many were refused for the limit.
        """
        mine = self._keys_of.setdefault(conn, set())
        self._instance_of[conn] = instance
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
            mine.add(key)
            by_key.setdefault(key, set()).add(conn)
            added.append(key)
        self.total += len(added)
        if added:
            self._by_instance[instance] = by_key
        return added, refused

    def unsubscribe(self, conn: Conn, keys: Iterable[str]) -> None:
        """Remove ``keys`` from ``conn``'s subscriptions; unknown keys are ignored."""
        mine = self._keys_of.get(conn)
        if not mine:
            return
        instance = self._instance_of[conn]
        for key in keys:
            if key in mine:
                mine.discard(key)
                self._drop(instance, key, conn)

    def forget(self, conn: Conn) -> None:
        """Remove every subscription of ``conn`` (it disconnected)."""
        mine = self._keys_of.pop(conn, None)
        instance = self._instance_of.pop(conn, None)
        if mine and instance is not None:
            for key in mine:
                self._drop(instance, key, conn)

    def keys_of(self, conn: Conn) -> frozenset[str]:
        """The keys ``conn`` is subscribed to."""
        return frozenset(self._keys_of.get(conn, ()))

    def count(self, conn: Conn) -> int:
        """How many keys ``conn`` is subscribed to."""
        return len(self._keys_of.get(conn, ()))

    def recipients(self, instance: str, keys: Iterable[str]) -> list[Conn]:
        """Connections of ``instance`` subscribed to any of ``keys``, each once.

        Returns a new list, so delivering may change subscriptions safely.
        """
        by_key = self._by_instance.get(instance)
        if not by_key:
            return []
        found: set[Conn] | None = None
        for key in keys:
            conns = by_key.get(key)
            if conns:
                found = set(conns) if found is None else found | conns
        return list(found) if found else []

    def _drop(self, instance: str, key: str, conn: Conn) -> None:
        self.total -= 1
        by_key = self._by_instance[instance]
        conns = by_key[key]
        conns.discard(conn)
        if not conns:
            del by_key[key]
            if not by_key:
                del self._by_instance[instance]
