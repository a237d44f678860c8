"""What travels between services beside the pixels: ImageMetadata and its PUB/SUB stream."""
