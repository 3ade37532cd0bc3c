"""The SSH front of gitserver: parse an exec command, authenticate, run git as a child."""

from gitserver import depwarnings

# Every import of asyncssh in gitserver goes through this package: quiet its import-time
# deprecation warnings here, whichever entry point (CLI, daemon, API, a test) got here first.
depwarnings.quiet()
