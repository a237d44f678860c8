"""HDF5 writer: images from the ring into HDF5 files."""
