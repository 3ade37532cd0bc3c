"""Administrative operations shared by the REST API and the CLI mirrors, one module per domain.

Each function takes the caller's Session and never commits. Permission checks belong to the
caller (the API checks the acting principal; the CLI is run by the operator); the rules the API
applies are the pure ``check_*`` functions of :mod:`gitserver.admin.rules`, table-tested without
a database. Callers import the module of the domain they use (``from gitserver.admin import
users``); this package re-exports nothing.
"""
