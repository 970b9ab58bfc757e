"""One exception root: every exception class defined in cdc/, catalog/ and derivers/ is a CdcError.

The root lives in catalog/errors.py (the lowest layer); cdc/errors.py re-exports it with the
engine's subclasses. The walk imports every module of the three packages, so a new error class
anywhere is checked without being listed here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import catalog.errors
import cdc.errors
from catalog.errors import (
    CatalogError,
    CdcError,
    EventValidationError,
    FieldError,
    FormError,
    KeyFormatError,
    RegistryError,
    UnknownEventType,
)

PACKAGES = ("cdc", "catalog", "derivers")

#: Exception classes allowed outside the root, with the reason. None today.
OUTSIDE_THE_ROOT: dict[str, str] = {}


def _modules() -> list[ModuleType]:
    modules = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            modules.append(importlib.import_module(info.name))
    return modules


def _exception_classes() -> dict[str, type[BaseException]]:
    found = {}
    for module in _modules():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def test_the_walk_sees_the_errors_of_every_package() -> None:
    names = set(_exception_classes())
    assert {"catalog.errors.CdcError", "cdc.errors.SlotMissing", "cdc.errors.DecodeError"} <= names
    assert any(name.startswith("cdc.sinks.") for name in names)


def test_every_exception_class_is_a_cdc_error() -> None:
    outside = {
        name
        for name, cls in _exception_classes().items()
        if not issubclass(cls, CdcError) and name not in OUTSIDE_THE_ROOT
    }
    assert outside == set()


def test_the_engine_and_the_catalog_share_the_root() -> None:
    assert cdc.errors.CdcError is catalog.errors.CdcError


@pytest.mark.parametrize(
    ("cls", "stdlib"),
    [
        (CatalogError, Exception),
        (FormError, ValueError),
        (KeyFormatError, ValueError),
        (EventValidationError, ValueError),
        (RegistryError, Exception),
        (UnknownEventType, KeyError),
    ],
)
def test_catalog_errors_are_cdc_errors_and_keep_their_builtin_base(
    cls: type[BaseException], stdlib: type[BaseException]
) -> None:
    assert issubclass(cls, CatalogError) and issubclass(cls, CdcError) and issubclass(cls, stdlib)


def test_catalog_errors_read_as_one_line() -> None:
    err = EventValidationError("TICKET_CREATED", "k", [FieldError("ticketId", "uuid_text", "not a uuid")])
    assert err.one_line() == "TICKET_CREATED draft is invalid: ticketId: not a uuid"
    assert (err.retryable, err.sqlstate, err.hint) == (False, None, "")
    assert UnknownEventType("NOPE").one_line() == "unknown event type 'NOPE'"
    assert KeyFormatError("tenant", "must be a uuid").one_line() == "tenant must be a uuid"


def test_the_root_carries_hint_retry_class_and_sqlstate() -> None:
    err = CdcError("the slot is gone\nmore detail", hint="run cdc setup", sqlstate="42704")
    assert err.one_line() == "the slot is gone — run cdc setup"
    assert (err.hint, err.sqlstate, err.retryable) == ("run cdc setup", "42704", False)
    assert cdc.errors.ConnectionLost("lost").retryable is True
    assert CdcError("").one_line() == "CdcError"
