"""bitshuffle_lz4 and lz4 values: byte-exact with bitshuffle/psi-bsread/HDF5, decoded into buffers."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import bitshuffle
import h5py
import hdf5plugin
import lz4.block
import numpy as np
import pytest
from bsread.data.compression import LZ4 as PsiLz4
from bsread.data.compression import BitshuffleLZ4 as PsiBitshuffle

from stddaq_common.wire import _bshuf_native, compression
from stddaq_common.wire.compression import (
    bitshuffle_lz4_compress,
    bitshuffle_lz4_compress_into,
    bitshuffle_lz4_compress_view,
    bitshuffle_lz4_decompress,
    bitshuffle_lz4_decompress_into,
    bitshuffle_lz4_header,
    bitshuffle_lz4_max_size,
    default_block_elements,
    lz4_compress,
    lz4_decompress,
    lz4_decompress_into,
    lz4_max_size,
)
from stddaq_common.wire.errors import COMPRESSION, SIZE, WireFormatError

DTYPES = ["u1", "<u2", ">u2", "<i4", "<u8", "<f2", "<f4", ">f8", "?"]
SIZES = [0, 1, 7, 8, 9, 100, 4096, 4096 * 3 + 13, 70001]


@pytest.fixture(params=["native", "python-api"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test through the C functions and through the Python-API fallback."""
    if request.param == "native" and not _bshuf_native.AVAILABLE:
        pytest.skip("this bitshuffle build does not export bshuf_decompress_lz4")
    saved = compression._use_native
    compression._use_native = request.param == "native"
    yield request.param
    compression._use_native = saved


def noisy(n: int, dtype: str, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(100, n).astype(dtype)


def frame_2mib() -> np.ndarray:
    return np.random.default_rng(7).poisson(100, (1024, 1024)).astype(np.uint16)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_bitshuffle_round_trip(backend: str, dtype: str, n: int) -> None:
    data = noisy(n, dtype, seed=n)
    value = bitshuffle_lz4_compress(data)
    assert bitshuffle_lz4_header(value) == (
        data.nbytes,
        default_block_elements(data.itemsize) * data.itemsize,
    )
    out = np.full(n + 5, 0xAB, dtype=data.dtype)
    written = bitshuffle_lz4_decompress_into(value, out, data.dtype)
    assert written == data.nbytes
    assert out[:n].tobytes() == data.tobytes()
    assert (out[n:].view(np.uint8) == np.full(5, 0xAB, dtype=data.dtype).view(np.uint8)).all()
    assert bitshuffle_lz4_decompress(value, data.dtype).tobytes() == data.tobytes()


@pytest.mark.parametrize("dtype", ["u1", "<u2", "<u4", "<f8"])
def test_bitshuffle_bytes_equal_psi_bsread_and_bitshuffle(dtype: str) -> None:
    data = noisy(5000, dtype)
    ours = bitshuffle_lz4_compress(data)
    assert ours == PsiBitshuffle.pack_data(data, data.dtype)
    block = default_block_elements(data.itemsize)
    assert ours[12:] == bitshuffle.compress_lz4(data, block).tobytes()
    back = PsiBitshuffle.unpack_data(ours, data.dtype, [data.size])
    assert back.tobytes() == data.tobytes()


def test_bitshuffle_explicit_block_size(backend: str) -> None:
    data = noisy(10_000, "<u2")
    value = bitshuffle_lz4_compress(data, block_elements=512)
    assert bitshuffle_lz4_header(value) == (data.nbytes, 1024)
    assert value[12:] == bitshuffle.compress_lz4(data, 512).tobytes()
    assert bitshuffle_lz4_decompress(value, "<u2").tobytes() == data.tobytes()


def test_bitshuffle_zero_block_size_means_default(backend: str) -> None:
    data = noisy(10_000, "<u2")
    value = bytearray(bitshuffle_lz4_compress(data))
    value[8:12] = bytes(4)
    assert bitshuffle_lz4_decompress(value, "<u2").tobytes() == data.tobytes()


def test_max_size_is_bitshuffles_bound() -> None:
    if not _bshuf_native.AVAILABLE:
        pytest.skip("this bitshuffle build does not export bshuf_compress_lz4_bound")
    for n in SIZES:
        for itemsize in (1, 2, 4, 8):
            block = default_block_elements(itemsize)
            expected = 12 + _bshuf_native.bshuf_compress_lz4_bound(n, itemsize, block)
            assert bitshuffle_lz4_max_size(n, itemsize) == expected


def test_incompressible_data_fits_max_size(backend: str) -> None:
    data = np.random.default_rng(3).integers(0, 2**63, 30_001, dtype=np.uint64)
    buffer = np.empty(bitshuffle_lz4_max_size(data.size, 8), np.uint8)
    written = bitshuffle_lz4_compress_into(data, buffer)
    assert written <= buffer.size
    assert bitshuffle_lz4_decompress(buffer[:written], np.uint64).tobytes() == data.tobytes()
    with pytest.raises(ValueError, match="may need"):
        bitshuffle_lz4_compress_into(data, np.empty(data.nbytes, np.uint8))


def test_compress_view_shares_its_buffer_and_handles_non_contiguous(backend: str) -> None:
    image = noisy(200 * 300, "<u2").reshape(200, 300)
    view = bitshuffle_lz4_compress_view(image[:, ::2])
    assert isinstance(view, memoryview)
    expected = np.ascontiguousarray(image[:, ::2])
    assert bitshuffle_lz4_decompress(view, "<u2").tobytes() == expected.tobytes()


def test_decompress_into_a_ring_like_mmap_slot(backend: str) -> None:
    import mmap

    frame = frame_2mib()
    value = bitshuffle_lz4_compress(frame)
    with mmap.mmap(-1, 3 * frame.nbytes) as ring:
        slot = memoryview(ring)[frame.nbytes : 2 * frame.nbytes]
        assert bitshuffle_lz4_decompress_into(value, slot, np.uint16) == frame.nbytes
        assert np.array_equal(np.frombuffer(slot, np.uint16).reshape(frame.shape), frame)
        slot.release()


def test_direct_chunk_is_readable_by_hdf5_filter_and_back(tmp_path: Path) -> None:
    frames = [frame_2mib()[:256], frame_2mib()[256:512]]
    path = tmp_path / "chunks.h5"
    with h5py.File(path, "w") as f:
        ours = f.create_dataset(
            "ours",
            shape=(2, 256, 1024),
            dtype="<u2",
            chunks=(1, 256, 1024),
            **hdf5plugin.Bitshuffle(cname="lz4"),
        )
        for index, frame in enumerate(frames):
            ours.id.write_direct_chunk((index, 0, 0), bitshuffle_lz4_compress(frame))
        f.create_dataset(
            "theirs",
            data=np.stack(frames),
            chunks=(1, 256, 1024),
            **hdf5plugin.Bitshuffle(cname="lz4"),
        )
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["ours"][:], np.stack(frames))
        for index, frame in enumerate(frames):
            _, chunk = f["theirs"].id.read_direct_chunk((index, 0, 0))
            out = np.empty_like(frame)
            assert bitshuffle_lz4_decompress_into(chunk, out, out.dtype) == frame.nbytes
            assert np.array_equal(out, frame)


@pytest.mark.parametrize("n", [0, 1, 100, 70001])
def test_lz4_round_trip_and_formats(backend: str, n: int) -> None:
    data = noisy(n, "<u2").tobytes()
    value = lz4_compress(data)
    assert value[:4] == struct.pack("<I", len(data))
    assert lz4.block.decompress(value[4:], uncompressed_size=len(data)) == data
    assert bytes(lz4_decompress(value)) == data
    psi = PsiLz4.pack_data(np.frombuffer(data, "<u2"))
    out = bytearray(len(data) + 3)
    assert lz4_decompress_into(psi, out) == len(data)
    assert bytes(out[: len(data)]) == data


def test_lz4_max_size_holds_incompressible() -> None:
    data = np.random.default_rng(5).bytes(50_000)
    assert len(lz4_compress(data)) <= lz4_max_size(len(data))


# --- malformed input -------------------------------------------------------------------


def corrupt(value: bytes, offset: int, replacement: bytes) -> bytes:
    return value[:offset] + replacement + value[offset + len(replacement) :]


def bitshuffle_value(n: int = 20_000) -> tuple[np.ndarray, bytes]:
    data = noisy(n, "<u2")
    return data, bitshuffle_lz4_compress(data)


def assert_wire_error(kind: str, function: object, *args: object, **kwargs: object) -> WireFormatError:
    with pytest.raises(WireFormatError) as caught:
        function(*args, **kwargs)  # type: ignore[operator]
    assert caught.value.kind == kind, caught.value.reason
    assert caught.value.reason
    return caught.value


def test_bitshuffle_rejects_short_header(backend: str) -> None:
    out = np.empty(10, np.uint16)
    for raw in (b"", b"\x00" * 11):
        error = assert_wire_error(COMPRESSION, bitshuffle_lz4_decompress_into, raw, out, np.uint16)
        assert "12-byte header" in error.reason


def test_bitshuffle_rejects_lying_lengths(backend: str) -> None:
    data, value = bitshuffle_value()
    out = np.empty(data.size + 100, np.uint16)
    longer = corrupt(value, 0, struct.pack(">Q", data.nbytes + 16))
    assert_wire_error(COMPRESSION, bitshuffle_lz4_decompress_into, longer, out, np.uint16)
    shorter = corrupt(value, 0, struct.pack(">Q", data.nbytes - 16))
    assert_wire_error(COMPRESSION, bitshuffle_lz4_decompress_into, shorter, out, np.uint16)
    odd = corrupt(value, 0, struct.pack(">Q", data.nbytes - 1))
    assert_wire_error(SIZE, bitshuffle_lz4_decompress_into, odd, out, np.uint16)
    huge = corrupt(value, 0, struct.pack(">Q", 2**62))
    assert_wire_error(SIZE, bitshuffle_lz4_decompress_into, huge, out, np.uint16)
    assert_wire_error(SIZE, bitshuffle_lz4_decompress, huge, np.uint16)
    block_lie = corrupt(value, 12, struct.pack(">I", 2**31))
    error = assert_wire_error(COMPRESSION, bitshuffle_lz4_decompress_into, block_lie, out, np.uint16)
    assert "length field lies" in error.reason or "truncated" in error.reason
    small_lie = corrupt(value, 12, struct.pack(">I", struct.unpack_from(">I", value, 12)[0] - 1))
    assert_wire_error(COMPRESSION, bitshuffle_lz4_decompress_into, small_lie, out, np.uint16)


def test_bitshuffle_rejects_truncated_and_padded(backend: str) -> None:
    data, value = bitshuffle_value()
    out = np.empty(data.size, np.uint16)
    for raw in (value[:-1], value[: len(value) // 2], value[:20], value + b"\x00"):
        assert_wire_error(COMPRESSION, bitshuffle_lz4_decompress_into, raw, out, np.uint16)


def test_bitshuffle_rejects_corrupt_blocks(backend: str) -> None:
    data, value = bitshuffle_value()
    out = np.empty(data.size, np.uint16)
    rejected = 0
    for offset in range(16, min(len(value), 16 + 64 * 40), 64):
        garbled = corrupt(value, offset, b"\xff\xff\xff\xff\xff\xff")
        try:
            bitshuffle_lz4_decompress_into(garbled, out, np.uint16)
        except WireFormatError as error:
            assert error.kind == COMPRESSION
            rejected += 1
    assert rejected > 0


def test_bitshuffle_rejects_bad_block_sizes(backend: str) -> None:
    data, value = bitshuffle_value()
    out = np.empty(data.size, np.uint16)
    for block_bytes in (3, 12):  # not a multiple of the element size / of 8 elements
        raw = corrupt(value, 8, struct.pack(">I", block_bytes))
        assert_wire_error(COMPRESSION, bitshuffle_lz4_decompress_into, raw, out, np.uint16)


def test_bitshuffle_size_checks(backend: str) -> None:
    data, value = bitshuffle_value()
    error = assert_wire_error(
        SIZE, bitshuffle_lz4_decompress_into, value, np.empty(data.size - 1, np.uint16), np.uint16
    )
    assert "output buffer" in error.reason
    assert_wire_error(
        SIZE,
        bitshuffle_lz4_decompress_into,
        value,
        np.empty(data.size, np.uint16),
        np.uint16,
        expected_nbytes=data.nbytes - 2,
    )
    assert_wire_error(SIZE, bitshuffle_lz4_decompress, value, np.uint16, max_nbytes=data.nbytes - 2)


def test_output_must_be_writable() -> None:
    _, value = bitshuffle_value()
    with pytest.raises(TypeError, match="read-only"):
        bitshuffle_lz4_decompress_into(value, bytes(100_000), np.uint16)
    with pytest.raises(TypeError, match="not a buffer"):
        lz4_decompress_into(lz4_compress(b"abc"), 12)


def test_input_must_be_a_buffer() -> None:
    assert_wire_error("parts", bitshuffle_lz4_decompress_into, 12, bytearray(8), np.uint8)
    assert_wire_error("parts", lz4_decompress, ["x"])


def test_lz4_rejects_malformed(backend: str) -> None:
    data = noisy(10_000, "<u2").tobytes()
    value = lz4_compress(data)
    out = bytearray(len(data) + 10)
    for raw in (b"", b"\x01\x00\x00\x00", value[:-3], value + b"xyz", value[:4] + b"\xff" * 40):
        assert_wire_error(COMPRESSION, lz4_decompress_into, raw, out)
    longer = corrupt(value, 0, struct.pack("<I", len(data) + 4))
    assert_wire_error(COMPRESSION, lz4_decompress_into, longer, out)
    shorter = corrupt(value, 0, struct.pack("<I", len(data) - 4))
    assert_wire_error(COMPRESSION, lz4_decompress_into, shorter, out)
    assert_wire_error(SIZE, lz4_decompress_into, value, bytearray(len(data) - 1))
    assert_wire_error(SIZE, lz4_decompress_into, value, out, expected_nbytes=len(data) + 2)
    huge = corrupt(value, 0, struct.pack("<I", 2**32 - 1))
    assert_wire_error(SIZE, lz4_decompress, huge)


def test_every_single_lying_field_is_caught_or_harmless(backend: str) -> None:
    """Overwrite each 4-byte window of a many-block value with lies; decode never misbehaves."""
    data = noisy(1000, "<u2")
    value = bitshuffle_lz4_compress(data, block_elements=128)
    out = np.empty(data.size + 64, np.uint16)
    outcomes = {"rejected": 0, "decoded": 0}
    for position in range(len(value) - 3):
        for lie in (0, 1, 255, len(value), 2**31 - 1, 2**32 - 1):
            raw = bytearray(value)
            struct.pack_into(">I", raw, position, lie)
            try:
                written = bitshuffle_lz4_decompress_into(raw, out, np.uint16)
            except WireFormatError as error:
                assert error.kind in (COMPRESSION, SIZE)
                outcomes["rejected"] += 1
            else:
                assert written <= out.nbytes
                outcomes["decoded"] += 1
    assert outcomes["rejected"] > 0
