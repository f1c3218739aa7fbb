"""Training: settings, the network, the step (a plain function of tensors), the EMA
prediction store, the loop, Ray Train distribution, checkpoints and the run folder."""
