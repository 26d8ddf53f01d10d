"""Training: Lightning wrappers around the plain model modules."""
