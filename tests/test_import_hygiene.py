"""The engine is headless at run time too: importing every engine module (and the
worker's entry point) loads no UI library. lint-imports checks the import graph;
this catches what it cannot see, such as a lazy import inside a function that runs
on import, or a dependency that drags Textual in."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import mailconsole.engine

ENGINE = sorted(
    m.name
    for m in pkgutil.walk_packages(mailconsole.engine.__path__, "mailconsole.engine.")
    if ".migrations" not in m.name
)
UI = (
    "textual",
    "rich",
    "mailconsole.screens",
    "mailconsole.widgets",
    "mailconsole.app",
)


def _loaded_after(modules: list[str]) -> set[str]:
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return set(out.split())


def test_the_engine_and_the_worker_load_no_ui() -> None:
    assert "mailconsole.engine.runtime" in ENGINE and len(ENGINE) > 20
    loaded = _loaded_after([*ENGINE, "mailconsole.cli.worker"])
    assert "mailconsole.engine.ops" in loaded  # the script really imported them
    ui = sorted(m for m in loaded for u in UI if m == u or m.startswith(u + "."))
    assert ui == []


def test_the_console_does_load_textual() -> None:
    """The check above can see a UI module when one is loaded."""
    assert "textual" in _loaded_after(["mailconsole.app"])
