"""Image generators: CogView3 and its baselines behind one interface (see models.base.System)."""
