"""The console scripts of pyproject.toml: each is a ``main(argv=None)`` of an installed tool
module, and the installed commands are exactly the declared ones."""

import importlib
import importlib.metadata
import inspect

import pytest

from support import BIN, ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def declared_scripts():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def test_every_console_script_is_a_callable_main():
    scripts = declared_scripts()
    assert scripts and all(name.startswith("rdrop-") for name in scripts)
    for name, target in scripts.items():
        module_name, _, attribute = target.partition(":")
        assert module_name.startswith("rdrop_tools.") and attribute == "main", name
        main = getattr(importlib.import_module(module_name), attribute)
        assert callable(main), name
        argv = inspect.signature(main).parameters.get("argv")
        assert argv is not None and argv.default is None, f"{name}: main(argv=None)"


def test_installed_commands_are_the_declared_ones():
    installed = {
        ep.name: ep.value
        for ep in importlib.metadata.entry_points(group="console_scripts")
        if ep.dist is not None and ep.dist.name == "rdrop-fairseq"
    }
    assert installed == declared_scripts(), "reinstall: bash scripts/setup-venv.sh"
    for name in installed:
        assert (BIN / name).is_file(), name


def test_no_python_tools_left_in_scripts():
    assert not list((ROOT / "scripts").rglob("*.py"))
