"""Git LFS: the batch API's decisions, the object store, the locks and the pure SSH protocol.

The HTTP resources (gitserver.api.lfs_*) and the SSH commands (gitserver.ssh.lfs) are thin
fronts over these modules; docs/lfs.md explains the whole.
"""
