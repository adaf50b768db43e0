"""Command-line tools of mreg."""
