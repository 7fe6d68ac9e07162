"""Links to the other nodes of a relay cluster (config ``cluster``), over aiohttp.

- ``peers``: outbound peer links: aiohttp sessions, senders, their status.

What a link decides without I/O (its queue, batches, backoff) is in ``relay.links``.
"""
