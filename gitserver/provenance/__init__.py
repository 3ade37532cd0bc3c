"""Verifiable history (docs/provenance.md): the server's signing key, signed archive tags, the
reference log ``refs/gitserver/log``, attestations and the client-side verifier."""
