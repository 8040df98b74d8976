"""Experiment tracking: stages log their curves, figures, config and artifacts to TensorBoard, MLflow or W&B."""
