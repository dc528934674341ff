"""Plain ``nn.Module`` networks; the LightningModules in ``models/`` hold the training logic."""
