"""LightningDataModules shared by all families, selected with ``data=NAME``."""
