"""mreg benchmark: the registry direct versus through mreg-proxy, side by side in one run.

Run from the repository root: ``python -m bench`` (full) or ``python -m bench --quick``.
"""
