"""The one receive-pack launcher (gitserver.push.launcher): what SSH and Repour both start, and
the hook socket it serves."""

from __future__ import annotations

import os
import select
from pathlib import Path

from gitserver import config
from gitserver.push import launcher, limits, messages
from gitserver.push.hookenv import ENV_HOOK_FD, HookEnv
from gitserver.push.ledger import PushContext

A, B = "a" * 40, "b" * 40
QUARANTINE = "tmp_objdir-incoming-q1"


def receive_pack(tmp_path: Path, permission: str) -> launcher.ReceivePack:
    cfg = config.load(environ={"GITSERVER_DATA_DIR": str(tmp_path / "data"), "GITSERVER_MAX_PUSH_BYTES": "1000",
                                   "GITSERVER_MAX_BLOB_BYTES": "0"})
    ctx = PushContext(repo_id=4, user_id=2, key_id=3, key_fingerprint="SHA256:x", protocol="ssh",
                      client_address="127.0.0.1")
    return launcher.ReceivePack(cfg, ctx, tmp_path / "widgets.git", "acme/widgets", permission, user="ann",
                                limits=launcher.push_limits(cfg, 5000, None))


def test_argv_and_hook_environment(tmp_path: Path) -> None:
    push = receive_pack(tmp_path, "write")
    argv = push.argv()
    assert argv[-1] == str(tmp_path / "widgets.git")
    assert "receive.maxInputSize=1000" in argv
    env = HookEnv.from_env(push.hook_env(config_file="").to_env())
    assert (env.ctx.repo_id, env.repo, env.permission, env.ctx.protocol, env.user, env.ctx.key_fingerprint) == (
        4, "acme/widgets", "write", "ssh", "ann", "SHA256:x")
    assert env.limits == limits.PushLimits(None, 1000, 5000, None)


def ask(fd: int, request: messages.Request, expected: type[messages.Reply]) -> messages.Reply:
    os.write(fd, messages.encode(request))
    assert select.select([fd], [], [], 30)[0], "no reply on the hook socket"
    return messages.decode_reply(messages.loads(os.read(fd, 65536)), expected)


def test_the_hook_socket_answers_from_the_permission_it_was_given(tmp_path: Path) -> None:
    (tmp_path / "widgets.git" / "objects" / QUARANTINE).mkdir(parents=True)
    hooks = receive_pack(tmp_path, "read").hook_socket(None)  # type: ignore[arg-type]  # no database asked
    fd = int(hooks.env()[ENV_HOOK_FD])
    assert hooks.pass_fds == (fd,)
    with hooks:
        reply = ask(fd, messages.PreReceive(QUARANTINE, ((A, B, "refs/heads/main"),)), messages.Refused)
        assert reply == messages.Refused(("refs/heads/main: you do not have write permission",))
        assert ask(fd, messages.Limits(QUARANTINE), messages.Admitted) == messages.Admitted()
    assert not hooks._thread.is_alive()  # git's end closed: the thread got its end-of-file
