"""Training machinery shared by the command-line entry points and notebooks: configuration
presets, run directories with checkpoints, loading a trained run back (``training.runs``), the training
loop (``training.trainer``) and the registry of schemes."""
