"""Web page of the beamline: the live image, the acquisition and the stack's health."""

__version__ = "0.1.0"
