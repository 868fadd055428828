"""Hierarchical FL orchestration (HFLOP): aggregator placement and association."""
