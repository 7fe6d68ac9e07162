"""Links to the other nodes of a relay cluster (config ``cluster``), over aiohttp.

- ``peers``: outbound peer links: aiohttp sessions and senders.

What a link decides without I/O (its queue, state, batches, backoff, counters)
is in ``relay.links.peer_state``; this package only carries it out.
"""
