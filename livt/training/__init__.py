"""Training: configs, losses, metrics, optimisation, the engine, checkpoints and the CLI."""
