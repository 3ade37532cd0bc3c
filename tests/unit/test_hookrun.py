"""The proc-receive protocol of gitserver.push.hookrun, driven with in-memory streams."""

from __future__ import annotations

import io
import os
import socket
import tempfile
from pathlib import Path

import pytest

from gitserver.git.protect import RefCommand
from gitserver.provenance import logmove
from gitserver.push import hookrun, messages, refmove
from gitserver.push.hookenv import LedgerError
from gitserver.push.hookrun import pkt, proc_receive, read_pkt

Z, A, B = "0" * 40, "a" * 40, "b" * 40
FLUSH = b"0000"
LOG = "refs/gitserver/log"
TIP = "c" * 40  # the log's tip before the push


def server_stream(capabilities: str, *commands: str) -> io.BytesIO:
    data = pkt(f"version=1\0{capabilities}\n") + FLUSH
    data += b"".join(pkt(c + "\n") for c in commands) + FLUSH
    return io.BytesIO(data)


def replies(out: io.BytesIO) -> list[str]:
    """The hook's answer: its version line and flush, then one line per ref and a flush."""
    out.seek(0)
    assert read_pkt(out) == b"version=1\n"
    assert read_pkt(out) is None
    lines = []
    while (payload := read_pkt(out)) is not None:
        lines.append(payload.decode().rstrip("\n"))
    assert out.read() == b""
    return lines


class FakeLedger:
    """Records the calls in order (with the refs applied in between, through ``events``)."""

    def __init__(self, events: list[tuple[str, object]], broken: str = "",
                 by_rules: dict[str, str] | None = None) -> None:
        self.events = events
        self.broken = broken
        self.by_rules = by_rules or {}  # what the repository's rules refuse (docs/ref-rules.md)

    def intent(self, commands: list[RefCommand], options: list[str]) -> messages.IntentReply:
        if self.broken == "intent":
            raise LedgerError("database is down")
        self.events.append(("intent", [c.ref for c in commands]))
        if options:
            self.events.append(("options", options))
        admitted = [c for c in commands if c.ref not in self.by_rules]
        return messages.IntentReply(7 if admitted else 0, tuple(self.by_rules.items()))

    def log(self, push_id: int, ref_names: list[str]) -> messages.LogReply:
        """Entries chained on the tip: the n-th asked for is commit "e<n>…"."""
        if self.broken == "log":
            raise LedgerError("the server's signing key is unusable")
        self.events.append(("log", ref_names))
        asked = sum(1 for e in self.events if e[0] == "log")
        return messages.LogReply(TIP, tuple((ref, f"{asked}{n}".ljust(40, "e")) for n, ref in enumerate(ref_names)))

    def done(self, push_id: int, moved: list[str], logged: tuple[tuple[str, str], ...] = ()) -> list[str]:
        if self.broken == "done":
            raise LedgerError("database went away")
        self.events.append(("done", (push_id, moved)))
        self.events.append(("logged", list(logged)))
        return ["pipeline 9 queued: http://x/api/v1/pipelines/9"]


def run(capabilities: str, *commands: str, permission: str = "write",
        fail: set[str] | None = None, broken: str = "",
        events: list[tuple[str, object]] | None = None,
        stderr: io.BytesIO | None = None, by_rules: dict[str, str] | None = None,
        ) -> tuple[list[str], list[list[RefCommand]]]:
    applied: list[list[RefCommand]] = []
    events = [] if events is None else events
    git_dir = tempfile.mkdtemp(prefix="hookrun-")

    def transaction(script: str) -> str | None:
        """git's answer to an update-ref script: pushed refs in ``fail`` lose their
        compare-and-swap, and with ``broken="lock"`` the log's lock cannot be taken."""
        lines = [line.split() for line in script.splitlines()]
        cmds = [RefCommand(old, new, ref) for _op, ref, new, old in lines if ref != LOG]
        events.append(("update", [line[1] for line in lines]))
        for cmd in cmds:
            if cmd.ref in (fail or set()):
                return f"fatal: cannot lock ref '{cmd.ref}': is at {B} but expected {cmd.old}"
        if broken == "lock" and any(line[1] == LOG for line in lines):
            return (f"fatal: cannot lock ref '{LOG}': Unable to create "
                    f"'{os.path.realpath(git_dir)}/{LOG}.lock': File exists.")
        applied.append(cmds)
        return None

    out = io.BytesIO()
    rc = proc_receive(server_stream(capabilities, *commands), out,
                      {"GITSERVER_PERMISSION": permission, "GIT_DIR": git_dir},
                      is_ancestor=lambda old, new: (old, new) == (A, B), transaction=transaction,
                      ledger=FakeLedger(events, broken, by_rules), stderr=stderr or io.BytesIO())
    assert rc == 0
    return replies(out), applied


def test_each_ref_gets_its_own_verdict() -> None:
    lines, applied = run("", f"{Z} {A} refs/heads/new", f"{B} {A} refs/heads/main",
                         f"{A} {Z} refs/tags/v1", f"{Z} {A} refs/tags/repour-1")
    assert lines == [
        "ok refs/heads/new",
        "ng refs/heads/main non-fast-forward pushes are not allowed",
        "ng refs/tags/v1 deleting branches and tags is not allowed",
        "ng refs/tags/repour-1 this name is reserved for gitserver archives",
    ]
    assert [c.ref for c in applied[0]] == ["refs/heads/new"]


def test_atomic_push_refuses_all_when_one_is_refused() -> None:
    lines, applied = run("atomic", f"{Z} {A} refs/heads/new", f"{B} {A} refs/heads/main")
    assert lines[0].startswith("ng refs/heads/new atomic push failed")
    assert lines[1] == "ng refs/heads/main non-fast-forward pushes are not allowed"
    assert applied == []


SIGNED_RULE = "commit aaaaaaa is not signed by a registered key; rule 'refs/heads/main' requires signed commits"


def test_a_ref_the_rules_refuse_is_reported_in_their_words_and_never_moves() -> None:
    events: list[tuple[str, object]] = []
    lines, applied = run("", f"{Z} {A} refs/heads/main", f"{Z} {A} refs/heads/topic", events=events,
                         by_rules={"refs/heads/main": SIGNED_RULE})
    assert lines == [f"ng refs/heads/main {SIGNED_RULE}", "ok refs/heads/topic"]
    assert [c.ref for c in applied[0]] == ["refs/heads/topic"]
    assert ("done", (7, ["refs/heads/topic"])) in events


def test_rules_refusing_every_ref_record_and_move_nothing() -> None:
    events: list[tuple[str, object]] = []
    lines, applied = run("", f"{Z} {A} refs/heads/main", events=events, by_rules={"refs/heads/main": SIGNED_RULE})
    assert lines == [f"ng refs/heads/main {SIGNED_RULE}"]
    assert applied == [] and not [e for e in events if e[0] == "done"]


def test_atomic_push_with_a_ref_the_rules_refuse_moves_nothing() -> None:
    events: list[tuple[str, object]] = []
    lines, applied = run("atomic", f"{Z} {A} refs/heads/main", f"{Z} {A} refs/heads/topic", events=events,
                         by_rules={"refs/heads/main": SIGNED_RULE})
    assert lines == [f"ng refs/heads/main {SIGNED_RULE}",
                     "ng refs/heads/topic atomic push failed: another ref was refused"]
    assert applied == [] and ("done", (7, [])) in events


def test_lost_race_is_reported() -> None:
    lines, _ = run("", f"{A} {B} refs/heads/main", fail={"refs/heads/main"})
    assert lines == [f"ng refs/heads/main {refmove.LOST_RACE}"]


def test_each_ref_moves_in_one_transaction_with_its_log_entry_last() -> None:
    events: list[tuple[str, object]] = []
    run("", f"{Z} {A} refs/heads/one", f"{Z} {A} refs/heads/two", events=events)
    updates = [e[1] for e in events if e[0] == "update"]
    assert updates == [["refs/heads/one", LOG], ["refs/heads/two", LOG]]
    assert ("logged", [("refs/heads/one", "10".ljust(40, "e")), ("refs/heads/two", "11".ljust(40, "e"))]) in events


def test_after_a_ref_that_lost_its_race_the_rest_are_signed_again() -> None:
    """The second entry was chained on the first, which never reached the log."""
    events: list[tuple[str, object]] = []
    lines, _applied = run("", f"{Z} {A} refs/heads/one", f"{Z} {A} refs/heads/two", fail={"refs/heads/one"},
                          events=events)
    assert lines == [f"ng refs/heads/one {refmove.LOST_RACE}", "ok refs/heads/two"]
    assert [e[1] for e in events if e[0] == "log"] == [["refs/heads/one", "refs/heads/two"], ["refs/heads/two"]]
    assert ("logged", [("refs/heads/two", "20".ljust(40, "e"))]) in events
    assert ("done", (7, ["refs/heads/two"])) in events


@pytest.mark.parametrize("atomic", ["", "atomic"])
def test_a_log_that_cannot_be_written_moves_no_ref(atomic: str) -> None:
    events: list[tuple[str, object]] = []
    lines, applied = run(atomic, f"{Z} {A} refs/heads/one", f"{Z} {A} refs/heads/two", broken="lock",
                         events=events)
    why = (f"gitserver could not write the reference log (cannot lock ref '{LOG}': Unable to create "
           f"'{LOG}.lock': File exists.); nothing was changed")
    assert lines == [f"ng refs/heads/one {why}", f"ng refs/heads/two {why}"]
    assert applied == [] and ("done", (7, [])) in events


def test_a_log_that_cannot_be_signed_moves_no_ref() -> None:
    events: list[tuple[str, object]] = []
    lines, applied = run("", f"{Z} {A} refs/heads/one", broken="log", events=events)
    assert lines == ["ng refs/heads/one gitserver could not write the reference log "
                     "(the server's signing key is unusable); nothing was changed"]
    assert applied == [] and not [e for e in events if e[0] == "update"] and ("done", (7, [])) in events


def test_an_atomic_push_moves_the_log_once_through_its_chain() -> None:
    events: list[tuple[str, object]] = []
    run("atomic", f"{Z} {A} refs/heads/one", f"{Z} {A} refs/heads/two", events=events)
    assert [e[1] for e in events if e[0] == "update"] == [["refs/heads/one", "refs/heads/two", LOG]]
    script = logmove.script([RefCommand(Z, A, "refs/heads/one")], "", "e" * 40)
    assert script.splitlines()[-1] == f"update {LOG} {'e' * 40} {Z}"  # a first entry: the log must not exist


def test_reader_cannot_write() -> None:
    lines, applied = run("", f"{Z} {A} refs/heads/main", permission="read")
    assert lines == ["ng refs/heads/main you do not have write permission"]
    assert applied == []


@pytest.mark.parametrize("header", [b"+0x1", b" 12 ", b"zzzz", b"0003", b"ffff"])
def test_bad_pkt_headers_are_refused(header: bytes) -> None:
    with pytest.raises(ValueError):
        read_pkt(io.BytesIO(header + b"x" * 100))


def test_truncated_stream() -> None:
    with pytest.raises(EOFError):
        read_pkt(io.BytesIO(b"0010abc"))


def test_intent_is_recorded_before_refs_move_and_done_names_what_moved() -> None:
    events: list[tuple[str, object]] = []
    err = io.BytesIO()
    lines, _ = run("", f"{Z} {A} refs/heads/new", f"{A} {B} refs/heads/main",
                   fail={"refs/heads/main"}, events=events, stderr=err)
    assert events == [("intent", ["refs/heads/new", "refs/heads/main"]),
                      ("log", ["refs/heads/new", "refs/heads/main"]),
                      ("update", ["refs/heads/new", LOG]),
                      ("update", ["refs/heads/main", LOG]),
                      ("done", (7, ["refs/heads/new"])),
                      ("logged", [("refs/heads/new", "10".ljust(40, "e"))])]
    assert lines == ["ok refs/heads/new", f"ng refs/heads/main {refmove.LOST_RACE}"]
    assert b"pipeline 9 queued" in err.getvalue()


def test_unrecordable_push_moves_nothing() -> None:
    err = io.BytesIO()
    lines, applied = run("", f"{Z} {A} refs/heads/new", f"{Z} {A} refs/tags/repour-x",
                         broken="intent", stderr=err)
    assert applied == []
    assert lines == ["ng refs/heads/new gitserver could not record the push; nothing was changed, retry later",
                     "ng refs/tags/repour-x this name is reserved for gitserver archives"]
    assert b"database is down" in err.getvalue()


def test_done_failing_still_reports_the_moved_refs() -> None:
    err = io.BytesIO()
    lines, _applied = run("", f"{Z} {A} refs/heads/new", broken="done", stderr=err)
    assert lines == ["ok refs/heads/new"]  # the intent is recorded: the reconciler finishes it
    assert b"will record this push shortly" in err.getvalue()


def test_same_ref_twice_refuses_the_whole_push() -> None:
    events: list[tuple[str, object]] = []
    lines, applied = run("", f"{Z} {A} refs/heads/d", f"{A} {B} refs/heads/d", f"{Z} {A} refs/heads/e",
                         events=events)
    assert applied == [] and events == []
    assert lines == ["ng refs/heads/d this push names the ref more than once; nothing was changed",
                     "ng refs/heads/d this push names the ref more than once; nothing was changed",
                     "ng refs/heads/e this push names the ref more than once; nothing was changed"]


@pytest.mark.parametrize("ref, message", [
    ("refs/heads/HEAD", "a branch named HEAD would be confused with HEAD"),
    ("refs/tags/Repour-1", "this name is reserved for gitserver archives"),
    ("refs/heads/BRANCH-REPOUR-x", "this name is reserved for gitserver archives"),
])
def test_names_refused(ref: str, message: str) -> None:
    lines, applied = run("", f"{Z} {A} {ref}")
    assert lines == [f"ng {ref} {message}"]
    assert applied == []


def test_hook_environment_round_trips() -> None:
    from gitserver.push.hookenv import HookEnv, PushContext

    env = HookEnv(PushContext(repo_id=3, protocol="ssh", user_id=7, key_id=None, key_fingerprint="SHA256:x",
                              client_address="127.0.0.1"),
                  repo="acme/widgets", permission="write", data_dir="/d",
                  database_url="sqlite:///x", public_http_url="http://h", user="alice")
    assert HookEnv.from_env(env.to_env()) == env
    assert "GITSERVER_CONFIG" not in env.to_env()
    from gitserver.push.limits import PushLimits

    certified = env._replace(ctx=env.ctx._replace(cert_ca_fingerprint="SHA256:ca", cert_key_id="alice laptop",
                                                  cert_serial="42"))
    assert HookEnv.from_env(certified.to_env()) == certified
    assert certified.to_env()["GITSERVER_CERT_SERIAL"] == "42"
    from gitserver.push.hookdb import context_from_environment

    ctx = context_from_environment(certified.to_env())
    assert (ctx.cert_ca_fingerprint, ctx.cert_key_id, ctx.cert_serial) == ("SHA256:ca", "alice laptop", "42")
    limited = env._replace(limits=PushLimits(max_blob_bytes=10, tenant_quota_bytes=99))
    assert HookEnv.from_env(limited.to_env()) == limited
    assert limited.to_env()["GITSERVER_MAX_BLOB_BYTES"] == "10"
    with pytest.raises(ValueError, match="GITSERVER_REPO_ID is not set"):
        HookEnv.from_env({"GITSERVER_PERMISSION": "write"})


@pytest.mark.parametrize("head_text, moved, loose, born", [
    ("ref: refs/heads/main\n", ["refs/heads/main"], [], True),  # the pushed branch is HEAD
    ("ref: refs/heads/main\n", ["refs/heads/topic"], ["refs/heads/main"], True),  # HEAD's branch exists
    ("ref: refs/heads/main\n", ["refs/heads/topic"], [], False),  # unborn, or packed: ask git
    ("ref: refs/heads/main\n", ["refs/tags/v1"], [], False),
    ("3f" * 20 + "\n", ["refs/heads/main"], [], False),  # detached
    ("ref: refs/tags/v1\n", ["refs/tags/v1"], ["refs/tags/v1"], False),  # not a branch
    ("ref: refs/heads/../../config\n", [], ["config"], False),
    (None, ["refs/heads/main"], [], False),  # no HEAD file
])
def test_head_is_born_from_the_files_alone(tmp_path: Path, head_text: str | None, moved: list[str],
                                           loose: list[str], born: bool) -> None:
    if head_text is not None:
        (tmp_path / "HEAD").write_text(head_text)
    for ref in loose:
        (tmp_path / ref).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / ref).write_text("3f" * 20 + "\n")
    assert hookrun.head_is_born(moved, str(tmp_path)) is born
    assert hookrun.head_is_born(moved, None) is False


class _Recorded:
    def intent(self, commands: list[RefCommand], options: list[str]) -> messages.IntentReply:
        return messages.IntentReply(-1)

    def log(self, push_id: int, ref_names: list[str]) -> messages.LogReply:
        return messages.LogReply("")

    def done(self, push_id: int, moved: list[str], logged: tuple[tuple[str, str], ...] = ()) -> list[str]:
        return ["recorded by the database"]


def test_socket_ledger_reads_one_line_per_reply_and_falls_back_when_the_daemon_is_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Replies that arrive in pieces or together are split by line; when the other end is
    closed, the hook records through its own database connection (here a stand-in)."""
    monkeypatch.setattr(hookrun, "_direct_ledger", lambda environ: _Recorded())
    daemon, hook = socket.socketpair()
    with daemon:
        ledger = hookrun.SocketLedger(os.dup(hook.fileno()), {})
        hook.close()
        daemon.sendall(b'{"push_id"')
        daemon.sendall(b': 7}\n{"messages": ["pipeline 3 queued"]}\n')
        assert ledger.intent([RefCommand(Z, A, "refs/heads/main")], []) == messages.IntentReply(7)
        assert ledger.done(7, ["refs/heads/main"]) == ["pipeline 3 queued"]
        assert daemon.recv(4096).count(b"\n") == 2  # both requests arrived, one line each
    assert ledger.done(7, []) == ["recorded by the database"]


def test_socket_ledger_error_reply_is_a_ledger_error() -> None:
    daemon, hook = socket.socketpair()
    with daemon:
        ledger = hookrun.SocketLedger(os.dup(hook.fileno()), {})
        hook.close()
        daemon.sendall(b'{"error": "database error (OperationalError)"}\n')
        with pytest.raises(LedgerError, match="database error"):
            ledger.intent([RefCommand(Z, A, "refs/heads/main")], [])


def test_the_hooks_database_fallback_gets_the_daemons_signing_settings(tmp_path: Path) -> None:
    """The daemon's agent settings reach the hook's environment, where the fallback's
    configuration (gitserver.push.hookdb) reads them: it signs with the same key."""
    from gitserver import config as config_mod
    from gitserver.push import launcher
    from gitserver.push.ledger import PushContext

    agent_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    cfg = config_mod.load(environ={"GITSERVER_DATA_DIR": str(tmp_path), "GITSERVER_SIGNING_AGENT": "/run/agent.sock",
                                   "GITSERVER_SIGNING_KEY": agent_key})
    env = launcher.hook_env(cfg, PushContext(repo_id=1), "acme/w", "write", config_file="").to_env()
    assert (env["GITSERVER_SIGNING_AGENT"], env["GITSERVER_SIGNING_KEY"]) == ("/run/agent.sock", agent_key)
    fallback = config_mod.load(environ=env)
    assert (fallback.signing_agent, fallback.signing_key) == (cfg.signing_agent, cfg.signing_key)
    plain = launcher.hook_env(config_mod.load(environ={"GITSERVER_DATA_DIR": str(tmp_path)}), PushContext(repo_id=1),
                              "acme/w", "write", config_file="").to_env()
    assert "GITSERVER_SIGNING_AGENT" not in plain  # a file key: the fallback reads it from the data dir
