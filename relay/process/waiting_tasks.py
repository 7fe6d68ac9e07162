"""Where each asyncio task of the process waits: one short line per task, for a log line.

A stop or a handoff that does not end is a task waiting on something that
will not come. Naming the task and the line it waits on (relay's own, and
the innermost, often a library's) is most of the diagnosis.
"""

from __future__ import annotations

import asyncio
import os
from types import FrameType

import relay

#: relay's own source files are under this folder; paths are shown from its parent on.
_PACKAGE = os.path.dirname(relay.__file__) + os.sep
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(relay.__file__)) + os.sep
#: Installed libraries' paths are shown from here on.
_LIBRARIES = "site-packages" + os.sep


def where_tasks_wait() -> list[str]:
    """One line per pending task other than the caller: its name and where it waits.

    Each line reads ``name: relay/x.py:12 in f`` for the innermost frame of
    relay's own, followed by ``-> lib.py:34 in g`` when the task waits deeper,
    in a library or in the standard library.
    """
    current = asyncio.current_task()
    lines = []
    for task in asyncio.all_tasks():
        if task is current or task.done():
            continue
        lines.append(f"{task.get_name()}: {_where(_awaiting(task.get_coro()))}")
    return sorted(lines)


def _awaiting(coro: object) -> list[FrameType]:
    """The frames of a suspended coroutine and of those it awaits, outermost first.

    (``Task.get_stack`` stops at the task's own coroutine: a suspended one
    has no ``f_back``; the chain of awaits is ``cr_await``.)
    """
    frames = []
    while (frame := getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)) is not None:
        frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


def _where(frames: list[FrameType]) -> str:
    """The innermost relay frame of a chain of frames (outermost first), and the innermost one."""
    if not frames:
        return "no Python frame"  # a coroutine written in C
    innermost = frames[-1]
    own = next((f for f in reversed(frames) if _is_relays(f)), None)
    if own is None or own is innermost:
        return _place(innermost)
    return f"{_place(own)} -> {_place(innermost)}"


def _is_relays(frame: FrameType) -> bool:
    return frame.f_code.co_filename.startswith(_PACKAGE)


def _place(frame: FrameType) -> str:
    """``relay/x.py:12 in f``: a short path, the line, the function."""
    path = frame.f_code.co_filename
    if path.startswith(_PACKAGE):
        short = path[len(_PACKAGE_PARENT) :]
    elif (cut := path.rfind(_LIBRARIES)) >= 0:
        short = path[cut + len(_LIBRARIES) :]
    else:
        short = os.path.basename(path)
    return f"{short}:{frame.f_lineno} in {frame.f_code.co_name}"
