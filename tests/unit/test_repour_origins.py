"""Local origins of /clone and /adjust's sync: every spelling of a path into the data directory
is refused, whatever git would make of it, and a path outside is handed to git resolved.

Real git is run on each hostile spelling without the check, so the table shows which of them
git would really follow into another tenant's private repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gitserver import config as config_mod
from gitserver.repour import command, giturl

# Each spelling: a template over {data} (the data dir) and {out} (a directory outside it),
# and whether plain git fetches the private repository from it.
HOSTILE = [
    ("file://{data}/repos/other/priv.git", True),
    ("{data}/repos/other/priv.git", True),
    ("file://{out}/%64ata/repos/other/priv.git", True),  # a percent-encoded letter
    ("file://{out}/data%2Frepos%2Fother/priv.git", True),  # encoded slashes
    ("file://{out}/sub/%2e%2e/data/repos/other/priv.git", True),  # an encoded ..
    ("file://{out}/%2564ata/repos/other/priv.git", False),  # double encoding: git decodes once
    ("file://localhost{data}/repos/other/priv.git", True),
    ("file://127.0.0.1{data}/repos/other/priv.git", True),  # git ignores a file:// host
    ("file://{data}/./repos/other/priv.git", True),
    ("{out}/sub/../data/repos/other/../other/priv.git", True),
    ("file:////{data}/repos/other/priv.git", True),  # extra slashes
    ("//{data}/repos/other/priv.git", True),
    ("FILE://{data}/repos/other/priv.git", False),  # git knows no FILE transport
    ("file://{data}/repos/other/priv", True),  # git adds .git
    ("file://{data}/repos/other/priv.git/", True),
    ("{data}/repos/other/priv.git/.", True),
    ("{out}/link-into-data.git", True),  # a symbolic link outside, into the data dir
    ("{out}/link-into-data", True),  # git tries <path>.git: the link
    ("{out}/data-link/repos/other/priv.git", True),  # a link to the data dir itself
    ("{out}/gitfile", True),  # <path>/.git is a file "gitdir: <data>/…"
    ("{out}/alternates.git", True),  # objects/info/alternates into another tenant's objects
    ("{out}/objects-link.git", True),  # objects is a link into another tenant's objects
    ("{out}/chained.git", True),  # alternates of alternates
    ("{out}/quoted.git", True),  # a C-quoted alternate
    ("{data}", False),  # the data dir itself (the database, the host keys)
]

# Not local at all, but spellings git would read as options or helpers: refused by the parser.
NOT_URLS = ["ext::sh -c cat% {data}/x", "ext::git-upload-pack", "fd::3", "--upload-pack=touch /tmp/x",
            "-oProxyCommand=x:a/b", "ssh://-oProxyCommand=x/a/b", "git@-oProxyCommand:a/b",
            "data/repos/other/priv.git", "./repos/other/priv.git", "file:", "file://"]


def run_git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A data dir holding another tenant's private repository, and beside it every kind of
    path that leads into it."""
    root = tmp_path_factory.mktemp("origins")
    data, out = root / "data", root / "out"
    priv = data / "repos" / "other" / "priv.git"
    priv.parent.mkdir(parents=True)
    (out / "sub").mkdir(parents=True)
    run_git("init", "-q", "--bare", str(priv))
    src = root / "src"
    run_git("init", "-q", str(src))
    run_git("commit", "-q", "--allow-empty", "-m", "TOPSECRET", cwd=src)
    run_git("push", "-q", str(priv), "HEAD:refs/heads/main", cwd=src)
    (out / "data").symlink_to(data)  # for the encoded spellings under {out}
    (out / "link-into-data.git").symlink_to(priv)
    (out / "data-link").symlink_to(data)
    (out / "gitfile").mkdir()
    (out / "gitfile" / ".git").write_text(f"gitdir: {priv}\n")
    run_git("init", "-q", "--bare", str(out / "alternates.git"))
    (out / "alternates.git" / "objects" / "info" / "alternates").write_text(f"{priv / 'objects'}\n")
    run_git("init", "-q", "--bare", str(out / "chained.git"))
    (out / "chained.git" / "objects" / "info" / "alternates").write_text("../../alternates.git/objects\n")
    run_git("init", "-q", "--bare", str(out / "quoted.git"))
    (out / "quoted.git" / "objects" / "info" / "alternates").write_text(f'"{priv / "objects"}"\n')
    run_git("init", "-q", "--bare", str(out / "objects-link.git"))
    shutil.rmtree(out / "objects-link.git" / "objects")
    (out / "objects-link.git" / "objects").symlink_to(priv / "objects")
    # The private repository's refs: git then needs (and finds) its objects.
    head = run_git("--git-dir", str(priv), "rev-parse", "main").stdout.strip()
    for name in ("alternates.git", "chained.git", "quoted.git", "objects-link.git"):
        run_git("--git-dir", str(out / name), "update-ref", "refs/heads/main", head)
    return data, out


def open_config(data: Path) -> config_mod.Config:
    return config_mod.load(environ={"GITSERVER_DATA_DIR": str(data), "GITSERVER_ALLOW_PRIVATE_NETWORKS": "1"})


def git_fetches(origin: str, root: Path) -> bool:
    target = root / "probe"
    shutil.rmtree(target, ignore_errors=True)
    run_git("init", "-q", "--bare", str(target))
    done = run_git("-C", str(target), "-c", "protocol.file.allow=always", "fetch", "-q", "--", origin,
                   "+refs/heads/*:refs/probe/*")
    return done.returncode == 0 and bool(run_git("-C", str(target), "for-each-ref").stdout.strip())


@pytest.mark.parametrize("template, git_reads", HOSTILE)
def test_every_spelling_into_the_data_dir_is_refused(layout: tuple[Path, Path], template: str,
                                                      git_reads: bool) -> None:
    data, out = layout
    origin = template.format(data=data, out=out)
    assert git_fetches(origin, out.parent) is git_reads, "the table says what plain git does"
    with pytest.raises(command.ProcessingError) as info:
        giturl.check_origin(origin, open_config(data))
    assert info.value.exit_code == 10 and info.value.error_type == "OriginRefused"
    assert info.value.desc.startswith("origin URL refused: ")
    assert any(why in info.value.desc for why in ("data directory", "'%'", "quoted path", "name a host")), \
        info.value.desc


@pytest.mark.parametrize("template", NOT_URLS)
def test_option_and_helper_spellings_are_not_urls(layout: tuple[Path, Path], template: str) -> None:
    data, _out = layout

    def no_dns(*_args: object, **_kwargs: object) -> list[object]:
        raise OSError("no DNS in unit tests")

    with pytest.raises(command.ProcessingError, match="origin URL refused"):
        giturl.check_origin(template.format(data=data), open_config(data), resolver=no_dns)


def test_an_origin_outside_is_fetched_by_its_resolved_path(layout: tuple[Path, Path], tmp_path: Path) -> None:
    data, _out = layout
    origin = tmp_path / "up" / "widgets.git"
    run_git("init", "-q", "--bare", str(origin))
    (tmp_path / "alias").symlink_to(tmp_path / "up")
    for text in (str(origin), f"file://{origin}", f"file://localhost{origin}", f"file://{tmp_path}/alias/./widgets.git"):
        checked = giturl.check_origin(text, open_config(data))
        assert checked.text == text and checked.fetch_url == os.path.realpath(origin), text


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_a_bind_mount_of_the_data_dir_is_caught_by_identity(tmp_path: Path) -> None:
    # A bind mount is another name for the data dir that no resolving of names reveals; a user
    # and mount namespace (unshare -rm) lets the test make a real one without root.
    data, mount = tmp_path / "data", tmp_path / "mount"
    (data / "repos" / "other" / "priv.git").mkdir(parents=True)
    mount.mkdir()
    check = ("import sys; from pathlib import Path; from gitserver.repour import localorigin\n"
             "try:\n    print(localorigin.checked_path(sys.argv[1], Path(sys.argv[2])))\n"
             "except localorigin.LocalOriginRefused as exc:\n    print('refused:', exc)\n")
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", str(data), str(mount), sys.executable,
                           "-c", check, str(mount / "repos" / "other" / "priv.git"), str(data)],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])
    if done.returncode != 0 and "mount" in done.stderr:
        pytest.skip(f"no unprivileged bind mounts here: {done.stderr.strip()}")
    assert done.stdout.startswith("refused: local paths inside the server's data directory"), done


def test_file_origins_stay_refused_without_private_networks(layout: tuple[Path, Path]) -> None:
    data, out = layout
    strict = config_mod.load(environ={"GITSERVER_DATA_DIR": str(data)})
    for origin in (f"file://{out}/sub", str(out / "sub"), f"file://{data}/repos/other/priv.git"):
        with pytest.raises(command.ProcessingError, match="only allowed when private networks"):
            giturl.check_origin(origin, strict)
