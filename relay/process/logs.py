"""Logging setup: the console plus each file in ``logs``, reopened after rotation.

Files use ``WatchedFileHandler``, which notices when logrotate moved the file
and reopens it; ``reopen_log_files`` does the same on demand (SIGHUP). Lines
are plain text, or with ``log_format: "json"`` one JSON object per line for log
shippers, carrying the context relay attaches (``peer``, ``instance``,
``client``...) as fields of their own.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson

from relay.config import LogConfig
from relay.errors import StartupError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else was passed as ``extra=`` context.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the context fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single line of JSON."""
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


# websockets reports every connection open and close at INFO: per-connection
# detail, shown only with --debug. Never below INFO, even then: at DEBUG it
# writes out every header of every handshake (a browser's Cookie and
# Authorization among them) and every frame's content.
_CHATTY_LOGGERS = ("relay.browser.websocket",)


def open_log_files(logs: Sequence[LogConfig]) -> list[logging.Handler]:
    """A handler for each file in ``logs``, opened (directories created) but not installed.

    A reload opens them before it changes anything, so that a file it cannot
    open refuses the whole reload; ``close_log_files`` lets them go then.

    Raises:
        StartupError: a log file or its directory cannot be created.
    """
    handlers: list[logging.Handler] = []
    for index, entry in enumerate(logs):
        path = Path(entry.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(logging.handlers.WatchedFileHandler(path, encoding="utf-8"))
        except OSError as exc:
            close_log_files(handlers)
            raise StartupError(
                f"logs[{index}].path: cannot open the log file {path}: {exc.strerror or exc}"
            ) from None
    return handlers


def close_log_files(handlers: Sequence[logging.Handler]) -> None:
    """Close handlers from ``open_log_files`` that will not be installed."""
    for handler in handlers:
        handler.close()


def configure_logging(
    logs: Sequence[LogConfig],
    *,
    debug: bool = False,
    log_format: Literal["text", "json"] = "text",
    worker: int | None = None,
    files: Sequence[logging.Handler] | None = None,
) -> None:
    """Send log records to stderr and to each configured file, replacing earlier handlers.

    A ``worker`` of a multi-process node says which one it is on every line
    (``[worker 1]`` in text, a ``worker`` field in JSON). ``files``: the
    handlers ``open_log_files(logs)`` opened already (then nothing can fail).

    Raises:
        StartupError: a log file or its directory cannot be created.
    """
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
    elif worker is not None:
        formatter = logging.Formatter(FORMAT.replace("%(name)s", f"%(name)s [worker {worker}]"))
    else:
        formatter = logging.Formatter(FORMAT)
    opened = open_log_files(logs) if files is None else files
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr), *opened]
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        if worker is not None and log_format == "json":
            handler.addFilter(_WorkerField(worker))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if debug else logging.WARNING)


class _WorkerField(logging.Filter):
    """Adds the worker's index to each record, as a field of JSON lines."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self._worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self._worker
        return True


def reopen_log_files() -> None:
    """Close and reopen every log file, for rotation schemes that only move files."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream is not None:
                    handler.stream.close()
                handler.stream = handler._open()
            finally:
                handler.release()
