"""Data: readers of the configured sources (``datasets``), tokenization (``tokens``) and bad-row checks."""
