"""Fakes of external services, faithful to their public APIs, for any feature's tests."""
