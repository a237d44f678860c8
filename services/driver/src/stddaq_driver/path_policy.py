"""Which directories acquisitions may write to: checked before anything is created.

A request path must be absolute, must not contain `..` (or NUL bytes), and must lie inside
one of the configured allowed roots, also after symbolic links of its existing part are
resolved (a link inside a root that points outside is refused). The policy only reads the
filesystem; it never creates anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import PurePosixPath

MAX_PATH_BYTES = 4000
"""Longest request path accepted (PATH_MAX is 4096, file names are appended)."""


class PathRefused(Exception):
    """A request path the policy does not allow; `reason` says why, naming the path."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def path_syntax_problem(path: str) -> str | None:
    """Why `path` is not a usable absolute directory path, or None if it is."""
    if not path:
        return "the path is empty"
    if "\x00" in path:
        return "the path contains a NUL byte"
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        return f"the path is longer than {MAX_PATH_BYTES} bytes"
    if not path.startswith("/"):
        return f"the path {path!r} is not absolute (it must start with /)"
    if ".." in PurePosixPath(path).parts:
        return f"the path {path!r} contains '..'"
    return None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class PathPolicy:
    """The allowed roots, and the check every acquisition path goes through."""

    def __init__(self, allowed_roots: Iterable[str]) -> None:
        roots: list[str] = []
        for root in allowed_roots:
            problem = path_syntax_problem(root)
            if problem is not None:
                raise ValueError(f"allowed root {root!r}: {problem}")
            roots.append(os.path.normpath(root))
        if not roots:
            raise ValueError("no allowed roots given: name at least one directory")
        self.allowed_roots: tuple[str, ...] = tuple(roots)
        self._resolved_roots = tuple(os.path.realpath(root) for root in roots)

    def check(self, path: str) -> str:
        """The normalised `path` if acquisitions may write there; raise PathRefused if not."""
        problem = path_syntax_problem(path)
        if problem is not None:
            raise PathRefused(problem)
        normalised = os.path.normpath(path)
        roots_text = ", ".join(self.allowed_roots)
        if not any(_inside(normalised, root) for root in self.allowed_roots):
            raise PathRefused(
                f"the path {path!r} is outside the allowed roots ({roots_text})"
            )
        resolved = os.path.realpath(normalised)
        if not any(_inside(resolved, root) for root in self._resolved_roots):
            raise PathRefused(
                f"the path {path!r} resolves to {resolved!r} (through a symbolic link), "
                f"outside the allowed roots ({roots_text})"
            )
        return normalised
