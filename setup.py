"""setuptools entry point: ``pip install .``, ``pip install -e .`` and ``python setup.py``-era
tools. The metadata (name, dependencies, extras, console scripts) lives in pyproject.toml."""

from setuptools import setup

setup()
