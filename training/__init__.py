"""Training machinery shared by the command-line entry points and notebooks: configuration
presets, run directories with checkpoints, the training loop and the registry of schemes."""
