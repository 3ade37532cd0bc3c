"""What a push is: the hook's messages to the process that started git, and the one
receive-pack launcher both fronts call (docs/architecture.md, "Flow 1").

Empty on purpose: the git hooks import :mod:`gitserver.push.messages` on every push, and
importing this package must cost them nothing.
"""
