"""The SSH front of gitserver: parse an exec command, authenticate, run git as a child."""
