"""Generated protobuf code (from protos/ by `make proto`); only stddaq_common.metadata imports it."""
