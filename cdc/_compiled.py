"""Which build of a module Cython also compiled gets imported: the compiled one only while it
is current.

``setup.py`` compiles the modules of the per-event path, unchanged, into extension modules
beside their sources (``tickets.py`` and ``tickets.cpython-311-….so``). Python's own finder
prefers the extension, so a source edited since the last build would silently not run. This
finder, ahead of it for this project's packages, imports the source instead when

* ``CDC_NO_SPEEDUPS`` is set (the pure-Python paths, for tests and diagnosis), or
* the source is newer than its extension (a stale build: rebuild with ``make venv``; logged
  once per module). Newer by more than :data:`SLACK` seconds: an installer writes both files
  in one go, in any order, and some file systems keep times to a second or two.

Otherwise it stays out of the way. A build whose source is gone (a module removed or renamed)
is refused rather than imported; private modules without a ``.py`` (the hand-written C
``_speedups``) are never touched. Installed by each package's ``__init__``.

Times, not contents, are compared: a build copied in from elsewhere with a fresh time counts
as current, whatever it was built from.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

PACKAGES = ("cdc.", "catalog.", "derivers.")

#: How much newer than its build a source may be and still count as built from it.
SLACK = 2.0

log = logging.getLogger(__name__)


def compiled_file(directory: str, stem: str) -> str | None:
    """The extension module built for ``stem`` in ``directory``, if any."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = os.path.join(directory, stem + suffix)
        if os.path.exists(candidate):
            return candidate
    return None


class PreferCurrent(importlib.abc.MetaPathFinder):
    """A meta-path finder: the source of a module whose compiled build is disabled or stale."""

    def __init__(self) -> None:
        self.stale: set[str] = set()  # named in a warning already

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if path is None or not name.startswith(PACKAGES):
            return None
        stem = name.rpartition(".")[2]
        for directory in path:
            source = os.path.join(directory, stem + ".py")
            if not os.path.isfile(source):
                leftover = None if stem.startswith("_") else compiled_file(directory, stem)
                if leftover is not None:  # a module removed or renamed since the build
                    raise ModuleNotFoundError(
                        f"{name} is only a compiled build whose source is gone ({leftover}): "
                        "delete it (`make clean`)",
                        name=name,
                    )
                continue
            built = compiled_file(directory, stem)
            if built is None:
                return None  # nothing compiled: the default finders import the source
            if not os.environ.get("CDC_NO_SPEEDUPS"):
                if os.stat(source).st_mtime - os.stat(built).st_mtime <= SLACK:
                    return None  # current: the default finders import the extension
                if name not in self.stale:
                    self.stale.add(name)
                    log.warning(
                        "%s was edited after it was compiled: importing the source "
                        "(slower); run `make venv` to rebuild",
                        name,
                    )
            return importlib.util.spec_from_file_location(name, source)
        return None


def install() -> None:
    """Put the finder ahead of the default ones (once per interpreter)."""
    if not any(isinstance(f, PreferCurrent) for f in sys.meta_path):
        sys.meta_path.insert(0, PreferCurrent())
