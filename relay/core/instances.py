"""Instances: how a browser and an application server name the one they mean.

One relay serves several Phorge installs apart (Aphlict's "instances"): a
browser names its instance in its WebSocket path (``/~acme/``), an
application server with ``?instance=acme``; neither, the default instance.
"""

from __future__ import annotations

from relay.errors import NotificationError

DEFAULT_INSTANCE = "default"
#: The label instances are counted under together once a node counts
#: ``limits.max_instances`` of them one by one (see ``relay.core.hub``).
OVERFLOW_INSTANCE = "(other)"
#: The longest instance name a post may give (Phorge's are short identifiers).
#: Each name is remembered as long as its messages are (history, and the last
#: 200,000 posts' identities for two minutes): names of kilobytes, a new one in
#: each post, would hold memory that no bound counts.
MAX_INSTANCE_NAME = 255


def instance_from_path(path: str) -> str:
    """The instance a browser names in its path: ``/~acme/`` is ``acme``.

    As Aphlict reads it: the part between the first ``~`` and the next one (or
    the end), slashes removed. Reverse proxies may put a prefix before the
    ``~``; the query string is not part of the name. No ``~``, or nothing after
    it, means the default instance.
    """
    path = path.split("?", 1)[0]
    _, tilde, rest = path.partition("~")
    name = rest.split("~", 1)[0].replace("/", "") if tilde else ""
    return name or DEFAULT_INSTANCE


def instance_from_query(value: str | None) -> str:
    """The instance an admin request names with ``?instance=``; empty means default."""
    return value or DEFAULT_INSTANCE


def check_instance(name: str) -> str:
    """``name``, when a post may give it.

    Raises:
        NotificationError: it is longer than ``MAX_INSTANCE_NAME`` characters.
    """
    if len(name) > MAX_INSTANCE_NAME:
        raise NotificationError(f"the instance name is longer than {MAX_INSTANCE_NAME} characters")
    return name
