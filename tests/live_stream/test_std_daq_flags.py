"""std_daq's live-stream command line: `-sm/--source_suffix_meta`, `-si/--source_suffix_image`
and `-s/--source_suffix`, each with std_daq's meaning."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator

import pytest

from stddaq_common.runtime.runner import build_parser
from stddaq_live_stream.cli import add_arguments, options_from
from tests.live_stream.rig import (
    DEADLINE_S,
    Producer,
    Viewer,
    array10_frame,
    expected_image,
    make_setup,
    remove_setup,
    running,
    warm_up,
)

START = 500_000


@pytest.mark.parametrize(
    ("flags", "meta", "image"),
    [
        (["-sm", "image", "-si", "image"], "image", "image"),
        (["-sm", "image", "-si", "h5bitshuffle-lz4"], "image", "h5bitshuffle-lz4"),
        (["--source_suffix_meta", "filter", "--source_suffix_image", "blosc2"], "filter", "blosc2"),
        (["-s", "blosc2"], "blosc2", "blosc2"),
        (["-s", "blosc2", "-si", "image"], "blosc2", "image"),
        ([], "image", "image"),
        (["-s", "pub", "-sm", "image"], "image", "image"),
        (["--socket", "pub", "-s", "blosc2"], "blosc2", "blosc2"),
    ],
)
def test_std_daq_suffix_flags_mean_what_they_mean_upstream(
    flags: list[str], meta: str, image: str
) -> None:
    parser = build_parser("live_stream", add_arguments)
    options = options_from(parser.parse_args(["daq.json", "tcp://127.0.0.1:20000", *flags]))
    assert (options.metadata_suffix, options.image_suffix) == (meta, image)


@pytest.mark.parametrize("flags", [["-s", "push"], ["--socket", "push"], ["--socket", "router"]])
def test_a_socket_stddaq_cannot_serve_is_refused_naming_it(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser("live_stream", add_arguments)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["daq.json", "tcp://127.0.0.1:20000", *flags])
    assert exit_info.value.code == 2
    assert flags[1] in capsys.readouterr().err


@pytest.fixture
def cleanup() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


def test_the_live_stream_starts_with_sm_image_si_image(cleanup: contextlib.ExitStack) -> None:
    setup = make_setup({"fwd": {"type": "forward"}}, height=32, width=48)
    cleanup.callback(remove_setup, setup)
    address = setup.addresses["fwd"]
    producer = Producer(setup)
    cleanup.callback(producer.close)
    viewer = Viewer(address)
    cleanup.callback(viewer.close)
    with running(setup, address, "-sm", "image", "-si", "image") as stream:
        warm_up(producer, viewer.receive, itertools.count(1))
        ids = list(range(START, START + 10))
        for image_id in ids:
            assert producer.publish(image_id)
        got: dict[int, bytes] = {}
        deadline = time.monotonic() + DEADLINE_S
        while ids[-1] not in got:
            assert time.monotonic() < deadline, f"got {sorted(got)}"
            parts = viewer.receive(200)
            if parts is not None and array10_frame(parts) >= START:
                got[array10_frame(parts)] = parts[1]
        assert sorted(got) == ids
        assert all(got[i] == expected_image(i, 32, 48).tobytes() for i in ids)
        assert stream.terminate() == 0, stream.stderr()
