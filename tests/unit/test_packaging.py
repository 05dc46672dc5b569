"""The wheel holds every package: pyproject.toml lists them one by one (the package-dir mapping needs it),
so a new package left off that list would import in the source tree and be missing once installed."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_listed_in_pyproject() -> None:
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(settings["packages"])
    for name, folder in settings["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            package = ".".join([name, *relative.parts])
            if not package.startswith(tuple(f"{other}." for other in settings["package-dir"] if other != name)):
                assert package in listed, f"{package} ({init.parent}) is missing from pyproject's packages"
