"""The shared-memory image ring: geometry from the config, slot layout, segments, ImageRing."""
