"""Who is calling: SSH public keys and OIDC bearer tokens."""
