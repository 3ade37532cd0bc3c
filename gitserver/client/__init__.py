"""The CLI's admin commands as a client of the REST API.

One table of commands (:mod:`.spec`, :mod:`.people`, :mod:`.repos`) says, for each
``gitserver RESOURCE VERB``, its arguments, the API request it makes and how its answer is shown.
The same definition runs against a remote server (:class:`.http.RemoteApi`, ``--url``) or, on
the server host, against the data dir (an in-process API built by ``gitserver.cmd.local_api``):
there is no second copy of a command. This package imports nothing of the server's, so the
remote form needs only ``requests``.
"""
