"""Writing files as the requested user.

When the writer runs as root and an acquisition asks for uid != 0, the writer process
takes that user's effective uid, gid and supplementary groups for the **whole
acquisition** (from before the file is created until after it is closed), then returns
to root (the saved set-user-ID stays 0, so it can).

Why not only around file creation, or create as root and `fchown`: the kernel checks
permissions at open time, but root's writes to an open file still bypass what limits the
user: disk quotas and the filesystem's reserved blocks (CAP_SYS_RESOURCE), and a file
created as root and chowned was created where the user may not create files at all.
With the user's effective ids (a non-zero euid drops the effective capabilities), the
directory permission check, the owner and group of the file, quota accounting and the
reserved-space limit are all the user's, as if the user had run the writer.

glibc applies set*id calls to every thread of the process (ZeroMQ's I/O threads too).
"""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Iterator
from dataclasses import dataclass


class UserSwitchError(Exception):
    """The writer cannot act as the requested user."""


@dataclass(frozen=True, slots=True)
class FileOwner:
    """The uid/gid (and supplementary groups) files are written as."""

    uid: int
    gid: int
    groups: tuple[int, ...]


def resolve_owner(uid: int, gid: int | None) -> FileOwner:
    """The owner for a request: `gid`, else the user's primary group, else gid = uid.

    Supplementary groups come from the group database when the user is known there.
    """
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        primary = uid if gid is None else gid
        return FileOwner(uid, primary, (primary,))
    primary = entry.pw_gid if gid is None else gid
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, primary))))
    return FileOwner(uid, primary, groups)


def needs_switch(uid: int) -> bool:
    """True if writing as `uid` means changing the effective uid (uid 0: never)."""
    return uid != 0 and uid != os.geteuid()


@contextlib.contextmanager
def acting_as(owner: FileOwner | None) -> Iterator[None]:
    """Run the block with `owner`'s effective uid/gid/groups (None or no change: as is).

    Raises UserSwitchError if a switch is needed and the process is not root.
    """
    if owner is None or not needs_switch(owner.uid):
        yield
        return
    if os.geteuid() != 0:
        raise UserSwitchError(
            f"cannot write files as uid {owner.uid}: the writer runs as uid {os.geteuid()}, "
            "not root"
        )
    saved_groups = os.getgroups()
    saved_egid = os.getegid()
    os.setgroups(list(owner.groups))
    os.setresgid(-1, owner.gid, -1)
    try:
        os.setresuid(-1, owner.uid, -1)
    except OSError:
        os.setresgid(-1, saved_egid, -1)
        os.setgroups(saved_groups)
        raise
    try:
        yield
    finally:
        os.setresuid(-1, 0, -1)
        os.setresgid(-1, saved_egid, -1)
        os.setgroups(saved_groups)
