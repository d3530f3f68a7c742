"""Local stand-in for the 3dPot platform: backend container, Prometheus, S3, databases."""
