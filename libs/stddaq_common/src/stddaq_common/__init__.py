"""stddaq_common: the code every stddaq service shares."""

__version__ = "0.1.0"
