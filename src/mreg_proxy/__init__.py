"""mreg-proxy: Basic-auth reverse proxy in front of the distribution registry."""
