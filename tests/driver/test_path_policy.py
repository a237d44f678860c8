"""The path policy: absolute, no '..', inside an allowed root (also through symlinks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stddaq_driver.path_policy import PathPolicy, PathRefused, path_syntax_problem


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("", "empty"),
        ("relative/dir", "not absolute"),
        ("/data/../etc", "'..'"),
        ("/data/x/..", "'..'"),
        ("/data/\x00x", "NUL"),
        ("/" + "a" * 4001, "longer"),
    ],
)
def test_bad_syntax_is_named(path: str, words: str) -> None:
    problem = path_syntax_problem(path)
    assert problem is not None and words in problem


def test_good_syntax() -> None:
    assert path_syntax_problem("/data/p1/scan..1") is None


def test_inside_and_outside(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    policy = PathPolicy([str(root)])
    assert policy.check(str(root)) == str(root)
    assert policy.check(f"{root}/a/b/") == f"{root}/a/b"
    assert policy.check(f"{root}//a/./b") == f"{root}/a/b"
    with pytest.raises(PathRefused, match="outside the allowed roots"):
        policy.check(f"{root}-other/x")
    with pytest.raises(PathRefused, match="outside the allowed roots"):
        policy.check("/etc")
    with pytest.raises(PathRefused, match=r"'\.\.'"):
        policy.check(f"{root}/../data/x")


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    outside = tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    policy = PathPolicy([str(root)])
    with pytest.raises(PathRefused, match="symbolic link"):
        policy.check(f"{root}/link/scan")


def test_nothing_is_created(tmp_path: Path) -> None:
    policy = PathPolicy([str(tmp_path)])
    policy.check(f"{tmp_path}/new/dir")
    with pytest.raises(PathRefused):
        policy.check(f"{tmp_path}x/new")
    assert list(tmp_path.iterdir()) == []


def test_several_roots_and_the_filesystem_root() -> None:
    policy = PathPolicy(["/data", "/scratch/"])
    assert policy.check("/scratch/x") == "/scratch/x"
    assert PathPolicy(["/"]).check("/anything") == "/anything"


@pytest.mark.parametrize("roots", [[], ["relative"], ["/a/../b"]])
def test_bad_roots_are_refused(roots: list[str]) -> None:
    with pytest.raises(ValueError):
        PathPolicy(roots)
