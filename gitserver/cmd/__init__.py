"""The composition roots: the supervisor of `serve`, the container entrypoint, `check`, and the
wiring that builds each front from its parts."""
