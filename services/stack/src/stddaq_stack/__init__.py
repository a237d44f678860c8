"""The stack of one detector as supervised local processes, the demo and the acquisition client."""
