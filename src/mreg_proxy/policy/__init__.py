"""Retention rules and immutable tags: the policy file, the pure retention engine, pull times."""
