"""Driver: acquisition control over REST and std_daq's WebSocket protocol."""
