"""Fake PCO camera: a BSREAD PUSH source of deterministic frames."""
