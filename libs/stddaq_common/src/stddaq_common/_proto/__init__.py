"""Generated protobuf code (from protos/ by `make proto`); only stddaq_common.bus.metadata imports it."""
