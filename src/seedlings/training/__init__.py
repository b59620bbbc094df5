"""Training: one code path for 1 CPU, N torchrun processes and N pods."""
