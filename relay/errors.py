"""The exceptions relay raises, all under one root.

::

    RelayError
    ├── ConfigError (also ValueError)    the config file is unreadable or invalid
    ├── StartupError                     a listener could not start (port in use, bad TLS files)
    ├── ClusterStatusError               the cluster-status module (relay.cluster_status.errors)
    └── InputError (also ValueError)     a client sent something relay cannot use
        ├── NotificationError            an admin POST body is not a usable notification
        └── CommandError                 a browser frame is not a usable command

Callers catch ``RelayError`` for anything relay-specific, or a subclass where
they act differently (the CLI prints ``ConfigError.problems`` one per line).
"""

from __future__ import annotations


class RelayError(Exception):
    """Root of every error relay raises on purpose."""


class ConfigError(RelayError, ValueError):
    """The configuration could not be loaded.

    ``problems`` holds one plain-words line per problem, each naming the file,
    the entry and the field, so that every problem can be fixed in one pass.
    """

    def __init__(self, problems: list[str]) -> None:
        """Report ``problems``, one line each."""
        super().__init__("\n".join(problems))
        self.problems = problems


class StartupError(RelayError):
    """A listener or a resource it needs could not be set up."""


def problem_lines(exc: ConfigError | StartupError, source: str) -> list[str]:
    """``exc``'s problems, a line each, every one naming the file ``source`` first.

    A ConfigError's lines name the file already; a StartupError's name the
    field only (as ``serve`` and ``check-config`` name a problem: the file,
    then the field).
    """
    return exc.problems if isinstance(exc, ConfigError) else [f"{source}: {exc}"]


class InputError(RelayError, ValueError):
    """Input from a client that relay refuses, with a message fit to show it."""


class NotificationError(InputError):
    """An admin POST body that is not a usable notification."""


class CommandError(InputError):
    """A browser frame that is not a usable command."""
