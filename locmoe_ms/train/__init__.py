"""Training: optimizer, train step, loop, checkpoints, telemetry."""
