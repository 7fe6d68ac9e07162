"""relay: an Aphlict-compatible real-time notification relay for Phorge.

Browsers subscribe over WebSocket to object keys; application servers POST
notifications to the admin port; relay routes each notification to the
browsers subscribed to any of its keys, and floods it to cluster peers.
"""

__version__ = "0.1.0"

#: The Aphlict protocol version relay speaks (reported by ``/status/``).
PROTOCOL_VERSION = 7
