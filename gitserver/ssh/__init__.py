"""The SSH front of gitserver: parse an exec command, authenticate, run git as a child."""

from gitserver.process import depwarnings

# asyncssh is imported through this package (and by ssh_algorithms, which quiets it too): quiet
# its import-time deprecation warnings here, whichever entry point (CLI, daemon, API) came first.
depwarnings.quiet()
