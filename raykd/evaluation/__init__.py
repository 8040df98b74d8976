"""Evaluation: scoring, the bootstrap intervals, speed, the vLLM scorer and the report."""
