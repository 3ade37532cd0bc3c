"""Warnings that our dependencies raise about their own internals, kept from users.

A user of ``gitserver init`` cannot act on asyncssh still naming DSA types when it imports
cryptography (cryptography 51 deprecated DSA, and asyncssh 2.24 warns on import): such lines
only bury our own output. Each filter names the category and the module that raises it, so
a warning from our own code, or any other warning from a dependency, still shows.
"""

from __future__ import annotations

import warnings

# The module that raises each quieted warning: asyncssh's own modules, nothing else.
ASYNCSSH_MODULES = r"asyncssh(\..*)?$"


def quiet() -> None:
    """Install the filters. Idempotent; call it at each entry point, before asyncssh is imported."""
    try:
        from cryptography.utils import CryptographyDeprecationWarning
    except ImportError:  # cryptography absent: nothing of it can warn
        return
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=ASYNCSSH_MODULES)
