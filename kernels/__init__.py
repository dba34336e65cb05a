"""FP8 recipes and kernels; imports nothing of ours."""
