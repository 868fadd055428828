"""Validation harness: real federated training (PyTorch, imported only when called)."""
