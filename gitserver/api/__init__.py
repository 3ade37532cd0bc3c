"""The HTTP side: falcon app (REST API, Repour-compatible endpoints, read-only smart HTTP)."""
