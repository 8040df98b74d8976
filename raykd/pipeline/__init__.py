"""The pipeline's bookkeeping: run fingerprints, stage state, the console and the closing summary."""
