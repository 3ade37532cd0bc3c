"""What a push is, from the exec command to the queued pipeline (docs/architecture.md, "Flow 1"):
the one receive-pack launcher both fronts call, the hook entry and its environment, the typed
hook messages every end uses, the push limits and whole-push admission, the ledger, its
database fallback and the reconciler.

Empty on purpose: the git hooks import :mod:`gitserver.push.messages` on every push, and
importing this package must cost them nothing.
"""
