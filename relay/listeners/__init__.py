"""Where messages enter and leave a node over sockets.

- ``client_listener``: accepts browsers (WebSocket), closes them with 1001;
- ``browser``: one browser connection, an asyncio Protocol over
  websockets' sans-I/O core;
- ``admin``: the aiohttp admin app: ``POST /`` from Phorge and peers,
  ``GET /status/``.
"""
