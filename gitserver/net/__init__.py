"""Outbound network guards and the URLs gitserver hands out."""
