"""gitserver: self-hosted git hosting with protected history and archive pipelines.

Keep this module free of imports: the git hooks import `gitserver.push.hookrun` on every push and
must not pay for SQLAlchemy, asyncssh or falcon.
"""

__version__ = "0.1.0"
