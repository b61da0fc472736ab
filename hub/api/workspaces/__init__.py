"""Workspaces and memberships resource."""
