"""Host name lookups for the database connections, one name's apart from every other's.

asyncio looks names up on the event loop's shared default executor, and a
lookup cannot be cancelled. A host whose name the resolver never answers
therefore left one stuck thread behind at every check, until the pool was
full and every other host's lookup queued behind them: a healthy master then
timed out, went unhealthy and the cluster was reported read-only. Here each
name has at most one lookup running, on a thread of its own; a check that
finds the previous lookup still running waits for that one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import socket
import threading

__all__ = ["addresses"]

# Name -> the lookup running (or finished and not yet taken) for it.
_lookups: dict[str, concurrent.futures.Future[list[str]]] = {}


async def addresses(host: str, port: int) -> list[str]:
    """The addresses of ``host``, in the resolver's order; an address is its own.

    Raises ``OSError`` (``socket.gaierror``) when the name does not resolve,
    ``UnicodeError`` when it is not a valid name.
    Cancelling the call leaves the lookup running for the next call to take.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [host]
    lookup = _lookups.get(host)
    if lookup is None:
        lookup = _lookups[host] = _start_lookup(host, port)
    try:
        return await asyncio.wrap_future(lookup)
    finally:
        if lookup.done() and _lookups.get(host) is lookup:
            # Taken: the next call looks the name up afresh.
            del _lookups[host]


def _start_lookup(host: str, port: int) -> concurrent.futures.Future[list[str]]:
    """Look ``host`` up on a new daemon thread (a hung lookup must not hold up exit)."""
    future: concurrent.futures.Future[list[str]] = concurrent.futures.Future()
    # Running from now on: a cancelled waiter can not cancel it under the thread.
    future.set_running_or_notify_cancel()

    def look_up() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except Exception as exc:  # OSError, or UnicodeError for a malformed name
            future.set_exception(exc)
        else:
            found = [str(info[4][0]) for info in infos]
            future.set_result(list(dict.fromkeys(found)))

    threading.Thread(target=look_up, name=f"relay-resolve[{host}]", daemon=True).start()
    return future
