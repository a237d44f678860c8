#!/usr/bin/env bash
# Regenerate the committed protobuf code of stddaq_common from protos/ (called by `make proto`).
# The generated files are committed; tests/common/test_protobuf.py fails when they are stale.
# PYTHON may name the interpreter (default: the workspace venv), which needs grpcio-tools.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
out="$repo/libs/stddaq_common/src/stddaq_common/_proto"

cd "$repo"
"$python" -m grpc_tools.protoc -Iprotos --python_out="$out" --pyi_out="$out" \
    protos/std_daq_protocol.proto protos/stddaq_driver_writer.proto
# The generated module checks the protobuf runtime version when imported: fail here, not later.
"$python" -c "import stddaq_common._proto.std_daq_protocol_pb2, stddaq_common._proto.stddaq_driver_writer_pb2"
echo "regenerated $out/std_daq_protocol_pb2.py, stddaq_driver_writer_pb2.py and .pyi"
