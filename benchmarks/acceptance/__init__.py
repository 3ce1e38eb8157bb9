"""Acceptance runs on a machine the project is lent: `gpu_check.py` (`make gpu-check`), the
CUDA tests and the paper step's throughput on a GPU."""
