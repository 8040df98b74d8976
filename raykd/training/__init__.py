"""Training: the session a loop reports to, its checkpoints, the step loop, and the TorchTrainer."""
