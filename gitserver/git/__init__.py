"""Repository storage and the git-level rules (ref names, protected history, archives).

Modules here that the hooks import (refs, protect) use only the standard library.
"""
