"""A socket file a root process binds is connectable by the group of its folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import zmq

from stddaq_common.bus.ipc_socket import share_with_folder_group


def test_the_socket_file_gets_the_folders_group_and_mode_0770(tmp_path: Path) -> None:
    folder = tmp_path / "ipc"
    folder.mkdir()
    group = 4321 if os.geteuid() == 0 else os.getegid()
    if os.geteuid() == 0:
        os.chown(folder, -1, group)
    address = f"ipc://{folder}/det-writer-0"
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    try:
        push.bind(address)
        os.chmod(folder / "det-writer-0", 0o755)  # what root's umask gives
        share_with_folder_group(address)
        info = os.stat(folder / "det-writer-0")
        assert stat.S_IMODE(info.st_mode) == 0o770
        assert info.st_gid == group
    finally:
        push.close(0)
        context.term()


def test_a_tcp_address_is_left_alone(tmp_path: Path) -> None:
    before = sorted(os.listdir(tmp_path))
    share_with_folder_group("tcp://127.0.0.1:1")  # no socket file: nothing to change, no error
    assert sorted(os.listdir(tmp_path)) == before
