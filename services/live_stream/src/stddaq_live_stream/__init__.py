"""Live stream: images from the ring to viewers over ZeroMQ PUB, rate-limited per address."""
