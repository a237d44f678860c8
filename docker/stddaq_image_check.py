#!/usr/bin/env python3
"""What an image holds versus what its service imports (`stddaq-image-check`).

    stddaq-image-check [--json]

Imports every module of stddaq_common and of the image's service package ($STDDAQ_SERVICE,
e.g. stddaq_writer), and every module those import lazily (inside functions), so a missing
dependency fails the image build (the Dockerfile runs this as its smoke test). Then it
compares the distributions installed in the venv with the ones whose modules were
imported, and lists the ones never imported. `--json` prints that report as one JSON
object (the compose tests read it).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata as metadata
import importlib.util
import json
import os
import pkgutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

OUR_PACKAGES = ("stddaq_common",)
HDF5_PACKAGE = "stddaq_common.hdf5"


def import_all(package_name: str) -> list[str]:
    """Import a package and every module below it but `__main__`; the names imported."""
    package = importlib.import_module(package_name)
    names = [package_name]
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
        if info.name.endswith(".__main__"):
            continue  # runs the service when imported; its imports are scanned below
        if info.name.startswith(HDF5_PACKAGE) and importlib.util.find_spec("h5py") is None:
            continue  # HDF5 code: only in the images that write HDF5 files (they hold h5py)
        importlib.import_module(info.name)
        names.append(info.name)
    return names


def _is_type_checking(test: ast.expr) -> bool:
    """True for the test of `if TYPE_CHECKING:` / `if typing.TYPE_CHECKING:` (imports for
    mypy only)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_names(node: ast.AST) -> Iterator[str]:
    """Top-level module names of the import statements below `node`, skipping the
    `if TYPE_CHECKING:` blocks (but not their `else:`)."""
    if isinstance(node, ast.Import):
        yield from (alias.name.partition(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        yield node.module.partition(".")[0]
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children: Iterable[ast.AST] = node.orelse
    else:
        children = ast.iter_child_nodes(node)
    for child in children:
        yield from _import_names(child)


def source_files(package_name: str) -> list[Path]:
    """Every .py file of an (imported) package, `__main__.py` included."""
    package = sys.modules[package_name]
    return sorted(file for folder in package.__path__ for file in Path(folder).rglob("*.py"))


def imports_in_source(files: Iterable[Path]) -> set[str]:
    """Top-level names of every import statement in these files, also the ones inside
    functions (lazy imports, e.g. `import lz4.block` where it is needed)."""
    found: set[str] = set()
    for path in files:
        found.update(_import_names(ast.parse(path.read_text(encoding="utf-8"), str(path))))
    return found


def canonical(name: str) -> str:
    """A distribution name in its canonical form (PEP 503)."""
    return name.lower().replace("_", "-").replace(".", "-")


def installed_distributions() -> set[str]:
    """Canonical names of every distribution in this interpreter's environment."""
    return {canonical(dist.metadata["Name"]) for dist in metadata.distributions()}


def imported_distributions(module_names: Iterable[str]) -> set[str]:
    """Canonical names of the distributions that provide these (top-level) modules."""
    providers = metadata.packages_distributions()
    found: set[str] = set()
    for name in module_names:
        for dist in providers.get(name.partition(".")[0], []):
            found.add(canonical(dist))
    return found


@dataclass(frozen=True)
class ImageReport:
    """The distributions of an image against the ones its service imports."""

    service: str
    modules_checked: int
    installed: list[str]
    imported: list[str]
    unused: list[str]


def report(service: str) -> ImageReport:
    """Import everything of the service; the installed/imported/unused distributions."""
    packages = (*OUR_PACKAGES, service)
    modules = [name for package in packages for name in import_all(package)]
    files = [
        file
        for package in packages
        for file in source_files(package)
        if importlib.util.find_spec("h5py") is not None or "/stddaq_common/hdf5/" not in str(file)
    ]
    for name in sorted(imports_in_source(files) - set(sys.modules)):
        importlib.import_module(name)  # a lazy import of ours must work too
    installed = installed_distributions()
    imported = imported_distributions(list(sys.modules))
    return ImageReport(
        service=service,
        modules_checked=len(modules),
        installed=sorted(installed),
        imported=sorted(imported & installed),
        unused=sorted(installed - imported),
    )


def main(argv: list[str] | None = None) -> int:
    """Print the report; exit 1 if an import fails or STDDAQ_SERVICE is not set."""
    parser = argparse.ArgumentParser(prog="stddaq-image-check", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    service = os.environ.get("STDDAQ_SERVICE", "")
    if not service:
        print("stddaq-image-check: STDDAQ_SERVICE is not set", file=sys.stderr)
        return 1
    result = report(service)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(
            f"{service}: {result.modules_checked} modules import; "
            f"{len(result.installed)} distributions installed ({', '.join(result.installed)}); "
            f"never imported: {', '.join(result.unused) or 'none'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
