"""Datasets of a trial: the synthetic default, the fine-grained formats users bring, box files."""
