"""Datasets of image + text pairs, the shared vocabulary and the on-disk cache."""
