"""Helpers for tests and benchmarks only (no service imports this package; import-linter
checks it): service processes (`processes`) and small DAQ config documents (`configs`)."""
