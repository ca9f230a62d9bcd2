"""The data Meridian ships inside its wheel, found through ``importlib.resources``.

The event catalog (``schemas/catalog.yaml``), its Avro schemas (``schemas/avro/*.avsc``) and the
workflow definitions (``workflows/*.yaml``) live at the repository's root, where Terraform and
people read them. ``meridian/data/`` holds two symbolic links to them (``schemas``, ``workflows``):
the wheel's builder follows them, so an installed wheel has real copies under
``meridian/data/``, and a checkout (the editable install) reads the originals through the links.
Code asks this module, never the checkout's layout, so both find the same files the same way
(``tests/e2e/test_installed_wheel.py`` proves it from a wheel installed outside the checkout).

A service's own files (the live map's pages and Leaflet) stay in its package, found with
``package_directory``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_directory(package: str, *parts: str) -> Path:
    """The directory ``parts`` inside ``package``, as a file-system path (servers hand files to
    the OS). Meridian is installed unpacked, never zipped; a zipped install fails here, naming it."""
    found = files(package).joinpath(*parts)
    if not isinstance(found, Path):
        raise RuntimeError(f"{package} is not installed on a file system ({found!r})")
    return found


def catalog_file() -> Path:
    """``schemas/catalog.yaml``; the Avro schemas it names are beside it."""
    return package_directory("meridian", "data", "schemas") / "catalog.yaml"


def workflows_directory() -> Path:
    """``workflows/``: the Cloud Workflows definitions the embedded engine runs."""
    return package_directory("meridian", "data", "workflows")
