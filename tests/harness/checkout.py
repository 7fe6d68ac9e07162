"""A second checkout of relay's code, with a version string of its own, for upgrade tests.

An upgrade test runs the old process from the tree under test and the new one
from a copy of the ``relay`` package whose ``__version__`` differs: the copy
is real code (the same modules, imported from another directory), so what the
new process reports is what an upgraded checkout would report.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import relay

#: The package under test, copied as it is on disk.
_PACKAGE = Path(relay.__file__).resolve().parent


def second_checkout(directory: Path, version: str) -> dict[str, str]:
    """Copy the ``relay`` package into ``directory`` with ``__version__ = version``.

    Returns the environment that makes ``python -m relay`` run the copy:
    ``PYTHONPATH`` names it, and ``PYTHONSAFEPATH`` keeps the current
    directory (a checkout of its own when tests run from the repository)
    off the front of ``sys.path``.
    """
    copy = directory / "relay"
    shutil.copytree(_PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    set_version(directory, version)
    return {"PYTHONPATH": str(directory), "PYTHONSAFEPATH": "1"}


def set_version(directory: Path, version: str) -> None:
    """Give the checkout in ``directory`` the version ``version``: an upgrade installed in place.

    Processes started from then on run it; those running keep what they imported.
    """
    init = directory / "relay" / "__init__.py"
    text, count = re.subn(
        r'^__version__ = ".*"$', f'__version__ = "{version}"', init.read_text(), flags=re.M
    )
    assert count == 1, f"no __version__ line in {init}"
    init.write_text(text)
