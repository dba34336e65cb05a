"""Synthetic data: generation engine, verifiable generators and verifiers, long-CoT cold-start builder."""
