"""The driver-writer contract (stddaq_common.bus.driver_writer): std_daq's bytes both ways,
stddaq's additions skipped by a std_daq reader, the generated code current, and the
contract written in one module only."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from stddaq_common._proto import stddaq_driver_writer_pb2 as ours_pb
from stddaq_common.bus.driver_writer import (
    CloseCommand,
    ConfirmCommand,
    CreateCommand,
    EventKind,
    ImageCommand,
    MasterCommand,
    ProtocolError,
    driver_address,
    encode_command,
    encode_event,
    encode_image,
    encode_plain_response,
    parse_command,
    parse_response,
    writer_address,
)
from stddaq_common.bus.metadata import Dtype, ImageMeta, encode_image_metadata
from tests.common.spec_schema import spec_classes

REPO = Path(__file__).resolve().parents[2]
SPEC = spec_classes()
META = encode_image_metadata(ImageMeta(2**40 + 3, 32, 48, 32 * 48 * 2, Dtype.UINT16))


def test_socket_names_are_std_daqs() -> None:
    assert driver_address("GF2", 3, "/tmp") == "ipc:///tmp/GF2-driver-3"
    assert writer_address("GF2", 0, "/run/daq") == "ipc:///run/daq/GF2-writer-0"


@pytest.mark.parametrize(("acq_id", "index"), [(None, None), (0, 0), (7, 0), (1, 2**33)])
def test_hand_built_record_image_is_the_generated_codes_bytes(
    acq_id: int | None, index: int | None
) -> None:
    expected = ours_pb.WriterAction()
    expected.record_image.image_metadata = META
    if acq_id is not None:
        expected.record_image.stddaq.SetInParent()
        expected.record_image.stddaq.acquisition_id = acq_id
        expected.record_image.stddaq.index = index or 0
    assert encode_image(META, acq_id, index) == expected.SerializeToString()
    assert parse_command(encode_image(META, acq_id, index)) == ImageCommand(META, acq_id, index)


def test_a_std_daq_writer_reads_stddaq_commands_and_skips_the_additions() -> None:
    create = CreateCommand(
        path="/data/run/scan", uid=1234, acq_id=9, file="/data/run/scan1.h5",
        compression="bitshuffle_lz4", writer_index=1, n_writers=2, params={"n_image": 5},
        config={"detector_name": "D"},
    )
    action = SPEC["WriterAction"].FromString(encode_command(create))
    assert action.WhichOneof("action") == "create_file"
    assert (action.create_file.path, action.create_file.writer_id) == ("/data/run/scan", 1234)
    record = SPEC["WriterAction"].FromString(encode_image(META, 9, 4))
    assert record.record_image.image_metadata.SerializeToString() == META
    assert record.record_image.image_metadata.image_id == 2**40 + 3
    for command, kind in (
        (ConfirmCommand(9), "confirm_last_image"),
        (ConfirmCommand(probe=True), "confirm_last_image"),
        (CloseCommand(9, 5, "stop"), "close_file"),
    ):
        assert SPEC["WriterAction"].FromString(encode_command(command)).WhichOneof("action") == kind
    assert parse_command(encode_command(create)) == create


def test_stddaq_reads_a_std_daq_drivers_commands() -> None:
    spec_action = SPEC["WriterAction"]
    create = spec_action(create_file=SPEC["CreateFileCommand"](path="/d/x", writer_id=7))
    parsed = parse_command(create.SerializeToString())
    assert parsed == CreateCommand(path="/d/x", uid=7) and not parsed.stddaq  # type: ignore[union-attr]
    meta = SPEC["ImageMetadata"].FromString(META)
    record = spec_action(record_image=SPEC["RecordImage"](image_metadata=meta))
    assert parse_command(record.SerializeToString()) == ImageCommand(META)
    confirm = spec_action(confirm_last_image=SPEC["ConfirmLastImageWritten"]())
    assert parse_command(confirm.SerializeToString()) == ConfirmCommand()
    close = spec_action(close_file=SPEC["CloseFile"]())
    assert parse_command(close.SerializeToString()) == CloseCommand()


def test_responses_both_ways() -> None:
    plain = SPEC["WriterResponse"](code=2, reason="disk full").SerializeToString()
    assert encode_plain_response(False, "disk full") == plain
    parsed = parse_response(plain)
    assert (parsed.ok, parsed.reason, parsed.event) == (False, "disk full", None)
    event = encode_event(1, EventKind.CLOSED, acq_id=4, written=10, missing=1, missing_ids=[5],
                         bytes_written=99, file="/d/f1.h5", flushed=10)
    seen_by_std_daq = SPEC["WriterResponse"].FromString(event)
    assert (seen_by_std_daq.code, seen_by_std_daq.reason) == (1, "")
    answer = parse_response(event).event
    assert answer is not None
    assert (answer.writer, answer.event, answer.acq_id, answer.written, answer.missing_ids) == (
        1, EventKind.CLOSED, 4, 10, (5,)
    )
    assert SPEC["WriterResponse"].FromString(encode_event(0, "error", reason="x")).code == 2


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\xff\xff", "not a WriterAction"),
        (b"", "without an action"),
        (encode_command(MasterCommand(1, "", ["/a"], "D")), "'file' is empty"),
        (SPEC["WriterAction"](create_file=SPEC["CreateFileCommand"]()).SerializeToString(), "'path'"),
    ],
)
def test_bad_commands_are_named(data: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        parse_command(data)


def test_a_response_without_a_code_is_refused() -> None:
    with pytest.raises(ProtocolError, match="SUCCESS or FAILURE"):
        parse_response(b"")


def _fields(message: descriptor_pb2.DescriptorProto) -> dict[int, tuple[str, int]]:
    wire_type = {descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "len",
                 descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE: "len",
                 descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "len"}
    return {f.number: (f.name, wire_type.get(f.type, f.type)) for f in message.field}  # type: ignore[misc]


def test_every_std_daq_field_is_in_the_stddaq_schema_with_its_number_and_wire_type() -> None:
    ours = descriptor_pb2.FileDescriptorProto()
    ours_pb.DESCRIPTOR.CopyToProto(ours)
    spec = descriptor_pb2.FileDescriptorProto()
    SPEC["WriterAction"].DESCRIPTOR.file.CopyToProto(spec)
    ours_messages = {m.name: _fields(m) for m in ours.message_type}
    for name in ("WriterAction", "CreateFileCommand", "RecordImage", "CloseFile",
                 "ConfirmLastImageWritten", "WriterResponse"):
        spec_message = next(m for m in spec.message_type if m.name == name)
        for number, field in _fields(spec_message).items():
            assert ours_messages[name][number] == field, (name, number)
        assert all(number >= 1000 for number in set(ours_messages[name]) - set(_fields(spec_message)))


def test_committed_generated_code_is_current(tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpc_tools (grpcio-tools) is not installed: cannot run protoc")
    proto = REPO / "protos" / "stddaq_driver_writer.proto"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto.parent}",
         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", str(proto)],
        check=True,
    )
    generated = REPO / "libs" / "stddaq_common" / "src" / "stddaq_common" / "_proto"
    for name in ("stddaq_driver_writer_pb2.py", "stddaq_driver_writer_pb2.pyi"):
        assert (tmp_path / name).read_text() == (generated / name).read_text(), (
            f"{name} is stale: run `make proto`"
        )


_MESSAGE_NAMES = {"WriterAction", "WriterResponse", "CreateFileCommand", "RecordImage",
                  "CloseFile", "ConfirmLastImageWritten", "BuildMasterFile"}


def _contract_spots(path: Path) -> list[str]:
    """Code (not docstrings or comments) in `path` that names a driver-writer message or
    builds a driver-writer socket name."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    spots: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _MESSAGE_NAMES:
            spots.append(f"{path}:{node.lineno} {node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text: Any = node.value
            # f"{detector}-driver-{k}" / f"driver-{k}" leave the pieces "-driver-" / "driver-"
            if text in ("driver-", "-driver-", "-writer-") or text.endswith(
                ("}-driver-", "}-writer-")
            ) or "writer-events" in text:
                spots.append(f"{path}:{node.lineno} {text!r}")
    return spots


def test_the_contract_is_written_in_one_module_only() -> None:
    spots: list[str] = []
    for root in ("libs", "services", "bench"):
        for path in sorted((REPO / root).rglob("*.py")):
            if "_proto" not in path.parts:
                spots.extend(_contract_spots(path))
    contract = REPO / "libs/stddaq_common/src/stddaq_common/bus/driver_writer.py"
    assert spots and all(spot.startswith(f"{contract}:") for spot in spots), [
        spot for spot in spots if not spot.startswith(f"{contract}:")
    ]
