"""Training in either mode: the device, explicit mode's build, the optimizer, the train step, the loop, evaluation,
checkpoints and telemetry.

May import: everything below (config, data, layers, moe, model, parallel). Never autoparallel/ (above it: job.py
picks the mode) or the checkpoint tools.
"""
