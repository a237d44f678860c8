"""HDF5 shared by the writer and the driver (needs h5py and hdf5plugin, which both have)."""

FILE_FORMAT_BOUNDS = ("v110", "v110")
"""libver of every file stddaq writes: 'latest' (HDF5 2.0 formats) would be unreadable by
HDF5 1.10 readers such as h5dump 1.10."""
