"""Self-service over SSH (``ssh git@host help``): the commands every user runs without curl.

:mod:`.parse` turns the exec command into a :class:`SelfServiceCommand` (pure, table-tested),
:mod:`.service` does the work in a database session, :mod:`.render` prints the result (the
REST API's objects with ``--json``), and :mod:`.channel` adapts them to an asyncssh channel.
docs/cli.md lists the commands.
"""

from gitserver.ssh.selfservice.channel import SelfService, help_hint
from gitserver.ssh.selfservice.parse import SelfServiceCommand, parse

__all__ = ["SelfService", "SelfServiceCommand", "help_hint", "parse"]
