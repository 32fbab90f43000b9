"""Recipes on the training engine: BiT-HyperRule transfer, upstream pre-training, the offline demo."""
