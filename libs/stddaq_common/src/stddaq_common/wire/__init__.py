"""Wire formats: bytes <-> objects for BSREAD and array-1.0, and the compression they carry.

No sockets here: the services own their sockets and hand message parts to these codecs.
"""
