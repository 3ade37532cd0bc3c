"""Where repositories live on disk, how they are created, and how git is run on them.

Repositories are ``<data>/repos/<tenant>/<repo>.git``. Every git process the server starts gets
the protection settings on its command line (``-c`` wins over any config file a repository
might carry) and a minimal environment, and runs from an argument list, never a shell.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from gitserver.git import fsck, refs
from gitserver.policy.errors import Conflict, InvalidInput
from gitserver.policy.names import GIT_SUFFIX, validate_name

GIT = "git"
UPLOAD_PACK = "upload-pack"
RECEIVE_PACK = "receive-pack"
UPLOAD_ARCHIVE = "upload-archive"
SERVICES = (UPLOAD_PACK, RECEIVE_PACK, UPLOAD_ARCHIVE)
DEFAULT_BRANCH = "main"
# The hook scripts of <data>/hooks: git's own two, and the pack cache upload-pack runs instead of
# pack-objects (gitserver.git.packcache; not a hook name git looks for in core.hooksPath).
PACK_OBJECTS_HOOK = "pack-objects"
HOOK_NAMES = ("pre-receive", "proc-receive", PACK_OBJECTS_HOOK)
# Hooks an older release installed that must not run any more (the push is recorded by
# proc-receive now): removed when the hooks are installed.
RETIRED_HOOK_NAMES = ("post-receive",)
# The directory that holds the gitserver package: the hooks run python without site (-S) and
# find gitserver through PYTHONPATH.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent

# git reads it only from the command line or system config, never from a repository's.
PACK_OBJECTS_HOOK_SETTING = "uploadpack.packObjectsHook"

# Written into every repository's config and repeated on every git command line.
PROTECTED_CONFIG = {
    "receive.denyDeletes": "true",
    "receive.denyNonFastForwards": "true",
    "receive.fsckObjects": "true",
    "uploadpack.allowFilter": "true",
    "uploadpack.allowReachableSHA1InWant": "true",
    # Every ref, tags too, keeps a reflog: the ledger settles intents and `gitserver check`
    # verifies the ledger by it (gitserver.git.reflog).
    "core.logAllRefUpdates": "always",
    "gc.auto": "0",
}
# What clients and real histories need: written into new repositories and given on every git
# command line, but no protection relies on it, so
# `gitserver check` does not hold the config files of older repositories to it.
COMPAT_CONFIG = {
    # git push -o (gitserver.git.push_options); proc-receive validates the options.
    "receive.advertisePushOptions": "true",
    # Cosmetic fsck findings real histories carry are let in; every other one refuses.
    **fsck.RECEIVE_SETTINGS,
    **fsck.FSCK_SETTINGS,
}
# Given to every upload-pack (SSH and HTTP), not written into repositories: a protocol v0 or v1
# request may name by id only what a ref reaches (uploadpack.allowReachableSHA1InWant above),
# never any object the repository holds. Protocol v2 ignores both settings and serves any object
# by id, so the hooks keep the objects of refused pushes out (gitserver.push.admission).
# It must come first: in git, allowAnySHA1InWant=false also clears the reachable and tip
# permissions, which the protected settings after it then grant again.
UPLOAD_PACK_CONFIG = {"uploadpack.allowAnySHA1InWant": "false"}
# proc-receive takes every pushed ref so that each one is accepted or refused on its own,
# with the rule named (a pre-receive hook can only refuse the whole push).
PROC_RECEIVE_CONFIG = {"receive.procReceiveRefs": refs.PREFIX}


def repo_path(root: Path, tenant: str, name: str) -> Path:
    """The directory of repository ``tenant/name`` under ``root`` (:meth:`RepoStore.path`, for a
    caller that holds only the root); both names are validated, the result stays in root."""
    validate_name(tenant, "tenant")
    validate_name(name, "repository")
    path = (root / tenant / f"{name}{GIT_SUFFIX}").resolve()
    # Compare with a trailing separator: /data/repos2 must not pass for /data/repos.
    if not str(path).startswith(str(root.resolve()) + os.sep):
        raise InvalidInput("repository path escapes the data directory")
    return path


@dataclasses.dataclass(frozen=True)
class RepoStore:
    """The repositories under one data directory."""

    root: Path
    hooks_dir: Path

    def path(self, tenant: str, name: str) -> Path:
        """The repository's directory; both names are validated, the result stays in root."""
        return repo_path(self.root, tenant, name)

    def exists(self, tenant: str, name: str) -> bool:
        return (self.path(tenant, name) / "HEAD").is_file()

    def create(self, tenant: str, name: str, description: str = "") -> Path:
        """Create an empty protected bare repository; all or nothing."""
        import pygit2

        final = self.path(tenant, name)
        if final.exists():
            raise Conflict(f"repository {tenant}/{name} already exists on disk")
        final.parent.mkdir(parents=True, exist_ok=True)
        # Build it beside its final place and rename, so a crash never leaves half a repo.
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=final.parent))
        try:
            repo = pygit2.init_repository(str(tmp), bare=True, initial_head=DEFAULT_BRANCH)
            settings = {**PROTECTED_CONFIG, **COMPAT_CONFIG, "core.hooksPath": str(self.hooks_dir)}
            for key, value in settings.items():
                repo.config[key] = value
            (tmp / "description").write_text((description or name)[:500] + "\n")
            # The sample hooks git copies in are never run (core.hooksPath), but remove them
            # so nobody mistakes them for the active ones.
            shutil.rmtree(tmp / "hooks", ignore_errors=True)
            os.rename(tmp, final)
        except FileExistsError as exc:
            raise Conflict(f"repository {tenant}/{name} already exists on disk") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final


def git_argv(service: str, repo_path: Path, hooks_dir: Path, *extra: str,
             settings: Mapping[str, str] | None = None, pack_cache: str | None = None) -> list[str]:
    """The argument list that runs ``service`` on ``repo_path`` under the protection rules
    (``settings``: more ``-c`` settings, e.g. the push limits of gitserver.push.limits;
    ``pack_cache``: upload-pack's ``uploadpack.packObjectsHook``, gitserver.git.packcache)."""
    if service not in SERVICES:
        raise ValueError(f"unknown git service {service!r}")
    first = UPLOAD_PACK_CONFIG if service == UPLOAD_PACK else {}
    merged = {**first, **(settings or {}), **PROTECTED_CONFIG, **COMPAT_CONFIG, "core.hooksPath": str(hooks_dir)}
    if service == RECEIVE_PACK:
        merged.update(PROC_RECEIVE_CONFIG)
    if service == UPLOAD_PACK and pack_cache:
        merged[PACK_OBJECTS_HOOK_SETTING] = pack_cache
    argv = [GIT]
    for key, value in merged.items():
        argv += ["-c", f"{key}={value}"]
    return [*argv, service, *extra, str(repo_path)]


def git_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """A minimal environment for git children: no user config, no inherited secrets."""
    base = os.environ if base is None else base
    env = {
        "PATH": base.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C",
        "LC_ALL": "C",
        "HOME": base.get("HOME", "/"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
    }
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def install_hooks(hooks_dir: Path, data_dir: Path, python: str | None = None) -> None:
    """Write the server's hook scripts into ``hooks_dir`` (core.hooksPath of every repo).

    The templates ship as package data in ``gitserver/hooks/`` and name the interpreter and
    data dir as placeholders; they are filled here so a hook needs no PATH lookup and no config
    file.
    """
    python = python or sys.executable
    hooks_dir.mkdir(parents=True, exist_ok=True)
    for name in HOOK_NAMES:
        text = rendered_hook(name, data_dir, python)
        target = hooks_dir / name
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        os.replace(tmp, target)
    for name in RETIRED_HOOK_NAMES:
        (hooks_dir / name).unlink(missing_ok=True)


def rendered_hook(name: str, data_dir: Path, python: str | None = None) -> str:
    """The text :func:`install_hooks` writes for hook ``name`` (``gitserver check`` compares)."""
    text = hook_template(name)
    return (text.replace("@PYTHON@", _sh_quote(python or sys.executable))
            .replace("@DATA_DIR@", _sh_quote(str(data_dir)))
            .replace("@PACKAGE_ROOT@", _sh_quote(str(PACKAGE_ROOT))))


def hook_template(name: str) -> str:
    """The text of the hook template ``name`` (one of HOOK_NAMES), read from the package."""
    return resources.files("gitserver").joinpath("hooks", name).read_text(encoding="utf-8")


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
