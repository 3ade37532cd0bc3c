"""``python -m gitserver``.

``gitserver hook <name>`` is what git runs on every push: it goes straight to the hook, without
argparse and the CLI module (about 6 ms of CPU per push; docs/performance.md).
"""

import sys

# An option (``hook --help``) is for argparse, which words the usage.
if len(sys.argv) == 3 and sys.argv[1] == "hook" and not sys.argv[2].startswith("-"):
    from gitserver.push.hookrun import main as hook_main

    raise SystemExit(hook_main(sys.argv[2]))

# What upload-pack runs instead of pack-objects (the pack cache): as fast as the hooks.
if len(sys.argv) > 1 and sys.argv[1] == "pack-objects-hook":
    from gitserver.git.packcache import main as cache_main

    raise SystemExit(cache_main(sys.argv[2:]))

from gitserver.cli import main

raise SystemExit(main())
