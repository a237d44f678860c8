"""std_daq's protobuf schema rebuilt by hand from the interface spec (section 3), not from
protos/: a second, independent source of truth for wire-compatibility tests.

Every field number, type and enum value below is copied from /work/shared/spec/interfaces.md.
The schema lives in its own DescriptorPool, so it cannot collide with (or borrow from) the
generated code of stddaq_common._proto.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "std_daq_protocol"

F = descriptor_pb2.FieldDescriptorProto
UINT64, UINT32, INT32 = F.TYPE_UINT64, F.TYPE_UINT32, F.TYPE_INT32
BOOL, STRING, ENUM, MESSAGE = F.TYPE_BOOL, F.TYPE_STRING, F.TYPE_ENUM, F.TYPE_MESSAGE

ENUMS: dict[str, list[tuple[str, int]]] = {
    "ImageMetadataDtype": [
        ("unknown", 0),
        ("uint8", 1),
        ("uint16", 2),
        ("uint32", 4),
        ("uint64", 8),
        ("int8", 11),
        ("int16", 12),
        ("int32", 14),
        ("int64", 18),
        ("float16", 22),
        ("float32", 24),
        ("float64", 28),
    ],
    "ImageMetadataStatus": [
        ("undefined", 0),
        ("good_image", 1),
        ("missing_packets", 2),
        ("id_missmatch", 3),  # upstream's spelling, part of the interface
    ],
    "ImageMetadataCompression": [("none", 0), ("h5bitshuffle_lz4", 1), ("blosc2", 2)],
    "ResponseCode": [("UNKNOWN", 0), ("SUCCESS", 1), ("FAILURE", 2)],
}

# message -> [(field, number, type, type name for enums/messages, oneof name or None)]
FieldSpec = tuple[str, int, int, str | None, str | None]
MESSAGES: dict[str, list[FieldSpec]] = {
    "GFImageMetadata": [
        ("scan_id", 1, UINT32, None, None),
        ("scan_time", 2, UINT32, None, None),
        ("sync_time", 3, UINT32, None, None),
        ("frame_timestamp", 4, UINT64, None, None),
        ("exposure_time", 5, UINT64, None, None),
        ("store_image", 6, BOOL, None, None),
    ],
    "JFImageMetadata": [("daq_rec", 1, UINT64, None, None)],
    "EGImageMetadata": [("exptime", 1, UINT64, None, None)],
    "PcoImageMetadata": [
        ("global_timestamp_sec", 1, UINT64, None, None),
        ("global_timestamp_ns", 2, UINT64, None, None),
        ("bsread_name", 3, STRING, None, None),
    ],
    "ImageMetadata": [
        ("image_id", 1, UINT64, None, None),
        ("height", 2, UINT64, None, None),
        ("width", 3, UINT64, None, None),
        ("size", 4, UINT64, None, None),
        ("dtype", 5, ENUM, "ImageMetadataDtype", None),
        ("status", 6, ENUM, "ImageMetadataStatus", None),
        ("compression", 7, ENUM, "ImageMetadataCompression", None),
        ("gf", 8, MESSAGE, "GFImageMetadata", "image_metadata"),
        ("jf", 9, MESSAGE, "JFImageMetadata", "image_metadata"),
        ("eg", 10, MESSAGE, "EGImageMetadata", "image_metadata"),
        ("pco", 11, MESSAGE, "PcoImageMetadata", "image_metadata"),
    ],
    "CreateFileCommand": [("path", 1, STRING, None, None), ("writer_id", 2, INT32, None, None)],
    "RecordImage": [("image_metadata", 1, MESSAGE, "ImageMetadata", None)],
    "CloseFile": [],
    "ConfirmLastImageWritten": [],
    "WriterAction": [
        ("create_file", 1, MESSAGE, "CreateFileCommand", "action"),
        ("record_image", 2, MESSAGE, "RecordImage", "action"),
        ("close_file", 3, MESSAGE, "CloseFile", "action"),
        ("confirm_last_image", 4, MESSAGE, "ConfirmLastImageWritten", "action"),
    ],
    "WriterResponse": [
        ("code", 1, ENUM, "ResponseCode", None),
        ("reason", 2, STRING, None, None),
    ],
}


def spec_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The spec's schema as a FileDescriptorProto (proto3, package std_daq_protocol)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="spec_std_daq_protocol.proto", package=PACKAGE, syntax="proto3"
    )
    for enum_name, values in ENUMS.items():
        enum = file.enum_type.add(name=enum_name)
        for value_name, number in values:
            enum.value.add(name=value_name, number=number)
    for message_name, fields in MESSAGES.items():
        message = file.message_type.add(name=message_name)
        oneofs: list[str] = []
        for name, number, kind, type_name, oneof in fields:
            field = message.field.add(name=name, number=number, type=kind, label=F.LABEL_OPTIONAL)
            if type_name is not None:
                field.type_name = f".{PACKAGE}.{type_name}"
            if oneof is not None:
                if oneof not in oneofs:
                    oneofs.append(oneof)
                    message.oneof_decl.add(name=oneof)
                field.oneof_index = oneofs.index(oneof)
    return file


def spec_classes() -> dict[str, Any]:
    """Message classes of the spec schema, by message name, from a private pool."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(spec_file_descriptor())
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name in MESSAGES
    }
