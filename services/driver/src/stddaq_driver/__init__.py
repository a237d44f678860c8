"""Driver: acquisition control over REST and std_daq's WebSocket protocol."""

__version__ = "0.1.0"
