"""Links to the other nodes of a relay cluster (config ``cluster``).

- ``peers``: outbound peer links: aiohttp sessions, senders, their status;
- ``outbox``: a peer's bounded queue of messages to send (no I/O);
- ``backoff``: retry delays (no I/O).
"""
