"""Secrets resource."""
