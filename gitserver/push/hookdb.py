"""The hook's own way into the ledger: record the push straight into the database.

Used when git was started without a socket back to a gitserver process, or when that process
died while git went on (``kill -9`` of the SSH daemon mid-push). Importing SQLAlchemy costs a
few hundred milliseconds, which is why the SSH path does not come here.

It signs the push's log entries and attestations with the same key as the process that
started git: the configuration is read from the hook's environment, where that process put
its signing settings (``GITSERVER_SIGNING_AGENT`` and ``GITSERVER_SIGNING_KEY``, gitserver.push.hookenv),
and otherwise the file key of the data dir.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gitserver import config as config_mod
from gitserver.db.session import make_engine, make_session_factory
from gitserver.git import protect
from gitserver.provenance.pushlog import PushLog
from gitserver.push import ledger, messages
from gitserver.push.hookenv import LedgerError, PushContext


def _git_dir(environ: Mapping[str, str]) -> Path | None:
    """The repository the hook runs in (git sets GIT_DIR for its hooks)."""
    git_dir = environ.get("GIT_DIR")
    return Path(git_dir).absolute() if git_dir else None


def context_from_environment(environ: Mapping[str, str]) -> PushContext:
    return PushContext.from_env(environ)


class DirectLedger:
    """:class:`gitserver.push.hookrun.Ledger` over a database connection of the hook's own."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        try:
            cfg = config_mod.load(environ=dict(environ))
            self.service = ledger.HookService(
                make_session_factory(make_engine(cfg.effective_database_url, pool_size=1)),
                context_from_environment(environ), cfg.http_base_url,
                push_log=PushLog(cfg), repo_path=_git_dir(environ))
        except Exception as exc:  # any failure here means: not recorded
            raise LedgerError(f"no database: {type(exc).__name__}") from exc

    def intent(self, commands: list[protect.RefCommand], options: list[str]) -> messages.IntentReply:
        reply = self._answer(messages.intent_for(commands, options))
        assert isinstance(reply, messages.IntentReply)  # HookService answers an Intent so
        return reply

    def log(self, push_id: int, ref_names: list[str]) -> messages.LogReply:
        reply = self._answer(messages.Log(push_id, tuple(ref_names)))
        assert isinstance(reply, messages.LogReply)
        return reply

    def done(self, push_id: int, moved: list[str], logged: tuple[tuple[str, str], ...] = ()) -> list[str]:
        reply = self._answer(messages.Done(push_id, tuple(moved), logged))
        assert isinstance(reply, messages.DoneReply)
        return list(reply.messages)

    def _answer(self, request: messages.Request) -> messages.Reply:
        """The service's typed answer, with no wire in between (this is the same process)."""
        reply = self.service.answer(request, trust_push_ids=True)
        if isinstance(reply, messages.Failed):
            raise LedgerError(reply.error)
        return reply
