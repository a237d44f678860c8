"""Receiver: BSREAD or array-1.0 input into the shared-memory image ring."""
