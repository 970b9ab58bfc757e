"""The Cython builds of the per-event modules: imported only while current, never required.

``setup.py`` compiles the modules of :data:`COMPILED` unchanged; ``cdc/_compiled.py`` decides
per import whether the extension or the source runs. The suite runs on whichever build is
current; :func:`test_the_unit_suite_passes_on_the_source_build` runs the unit tests once more
on the source, as a machine without a compiler (or ``CDC_NO_SPEEDUPS=1``) does.
"""

from __future__ import annotations

import importlib.machinery
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cdc._compiled import SLACK, PreferCurrent, compiled_file

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
COMPILED = re.findall(r'^    "(.+\.py)",$', (ROOT / "setup.py").read_text(), re.MULTILINE)


def module_name(path: str) -> str:
    return path[:-3].replace("/", ".")


def make_pair(tmp_path: Path, *, built_after_source: bool) -> tuple[Path, Path]:
    pkg = tmp_path / "cdc"
    pkg.mkdir()
    source, built = pkg / "hot.py", pkg / f"hot{SUFFIX}"
    source.write_text("VALUE = 1\n")
    built.write_bytes(b"")  # the finder only looks at presence and times
    older, newer = (source, built) if built_after_source else (built, source)
    os.utime(older, (1_000_000, 1_000_000))
    os.utime(newer, (2_000_000, 2_000_000))
    return source, built


def test_setup_compiles_modules_that_exist() -> None:
    assert COMPILED and all((ROOT / p).is_file() for p in COMPILED)
    assert "derivers/tickets.py" in COMPILED and "cdc/watch.py" in COMPILED


def test_a_current_build_is_left_to_the_default_finders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CDC_NO_SPEEDUPS", raising=False)
    make_pair(tmp_path, built_after_source=True)
    assert PreferCurrent().find_spec("cdc.hot", [str(tmp_path / "cdc")]) is None


def test_a_stale_build_imports_the_source_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CDC_NO_SPEEDUPS", raising=False)
    source, _ = make_pair(tmp_path, built_after_source=False)
    finder = PreferCurrent()
    with caplog.at_level(logging.WARNING, logger="cdc._compiled"):
        spec = finder.find_spec("cdc.hot", [str(tmp_path / "cdc")])
        again = finder.find_spec("cdc.hot", [str(tmp_path / "cdc")])
    assert spec is not None and spec.origin == str(source)
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
    assert again is not None and again.origin == str(source)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "cdc.hot was edited after it was compiled" in warnings[0]
    assert "make venv" in warnings[0]


def test_a_source_written_just_after_its_build_is_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installer (pip unpacking a wheel) writes the source a moment after the extension."""
    monkeypatch.delenv("CDC_NO_SPEEDUPS", raising=False)
    source, built = make_pair(tmp_path, built_after_source=True)
    os.utime(source, (built.stat().st_mtime + 0.5, built.stat().st_mtime + 0.5))
    assert PreferCurrent().find_spec("cdc.hot", [str(tmp_path / "cdc")]) is None


def test_no_speedups_imports_the_source_of_a_current_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDC_NO_SPEEDUPS", "1")
    source, _ = make_pair(tmp_path, built_after_source=True)
    spec = PreferCurrent().find_spec("cdc.hot", [str(tmp_path / "cdc")])
    assert spec is not None and spec.origin == str(source)


def test_a_build_whose_source_is_gone_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDC_NO_SPEEDUPS", raising=False)
    source, _ = make_pair(tmp_path, built_after_source=True)
    source.unlink()
    with pytest.raises(ModuleNotFoundError, match="only a compiled build whose source is gone"):
        PreferCurrent().find_spec("cdc.hot", [str(tmp_path / "cdc")])


def test_modules_without_a_build_or_outside_the_project_are_not_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDC_NO_SPEEDUPS", "1")
    make_pair(tmp_path, built_after_source=True)
    finder = PreferCurrent()
    assert finder.find_spec("other.hot", [str(tmp_path / "cdc")]) is None  # not our package
    assert finder.find_spec("cdc", None) is None  # top level
    (tmp_path / "cdc" / "cold.py").write_text("")
    assert finder.find_spec("cdc.cold", [str(tmp_path / "cdc")]) is None  # nothing compiled
    (tmp_path / "cdc" / f"_speedups{SUFFIX}").write_bytes(b"")
    assert finder.find_spec("cdc._speedups", [str(tmp_path / "cdc")]) is None  # hand-written C


def test_a_build_with_a_compiler_compiles_every_listed_module() -> None:
    """Where the C speedups were built in place, so were the Cython builds: a module Cython
    cannot compile would otherwise only cost speed, silently (setup.py goes on without it)."""
    speedups = pytest.importorskip("cdc.pgoutput._speedups")
    if Path(speedups.__file__).parent != ROOT / "cdc" / "pgoutput" or os.environ.get("CDC_NO_CYTHON"):
        pytest.skip("not an in-place build with Cython")
    missing = [p for p in COMPILED if compiled_file(str((ROOT / p).parent), Path(p).stem) is None]
    assert not missing, f"not compiled: {missing} (see the Cython warning of `make venv`)"


def test_every_built_module_is_current() -> None:
    """`make test` rebuilds before it runs: the suite tests the compiled build it ships."""
    for path in COMPILED:
        source = ROOT / path
        built = compiled_file(str(source.parent), source.stem)
        if built is not None:
            age = source.stat().st_mtime - os.stat(built).st_mtime
            assert age <= SLACK, f"stale build of {path}: run `make venv`"


_WHICH = (
    "import importlib, json, sys\n"
    "print(json.dumps({n: importlib.import_module(n).__file__ for n in sys.argv[1:]}))\n"
)


def imported_files(no_speedups: str) -> dict[str, str]:
    env = {**os.environ, "CDC_NO_SPEEDUPS": no_speedups}
    names = [module_name(p) for p in COMPILED]
    out = subprocess.run(
        [sys.executable, "-c", _WHICH, *names], capture_output=True, text=True, env=env, check=True, cwd=ROOT
    )
    return dict(json.loads(out.stdout))


def test_each_build_is_the_one_imported() -> None:
    compiled = imported_files("")
    for path in COMPILED:
        source = ROOT / path
        built = compiled_file(str(source.parent), source.stem)
        expected = built if built is not None else str(source)
        assert Path(compiled[module_name(path)]) == Path(expected)
    source_only = imported_files("1")
    assert all(source_only[module_name(p)].endswith(".py") for p in COMPILED)


def test_the_unit_suite_passes_on_the_source_build() -> None:
    """Every other unit test once more on the pure-Python source (CDC_NO_SPEEDUPS=1), as a
    machine without a compiler runs it: the compiled builds are the same source, but the
    hand-written C twins are not, and the source is what runs wherever neither is built."""
    env = {**os.environ, "CDC_NO_SPEEDUPS": "1"}
    here = Path(__file__).parent
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here)]
    argv += ["--ignore", str(Path(__file__)), "-W", "error"]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert re.search(r"\d+ passed", out.stdout)
