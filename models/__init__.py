"""LightningModules of the three families and their networks."""
