"""Acme lead scoring for Hookhub: an example third-party connector package."""
