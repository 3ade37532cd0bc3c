"""``python -m bench.console_pages GIT_DIR [--rounds N]``: the web console's page times on a
real history, side by side with cgit (Debian's, run as CGI) serving the same repository.

gitserver's pages are served in process through falcon's test client (server time: the
page's own work, no gunicorn or socket), on a data dir of its own into which ``GIT_DIR``'s
``main`` is fetched; cgit runs as the CGI program it is, once per request (its real cost:
a process per page). Both alternate page by page. Prints one Markdown table (median and p95
in ms) and writes it to ``bench/results/console-pages.md``.

A first view is one of a file (or blame) the server has never shown: each round asks for a
new commit on a branch of its own (``main`` plus a line at the end of the file), so nothing
kept from an earlier round can serve it. After each first view the bench waits, untimed, for
the background thread to finish what the view started (the page no longer says "being"), so
one round's work never lands in the next one's time; the table says how many first views
were answered complete (highlighted, blamed) rather than plain.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pygit2
from falcon import testing

CGIT = Path("/usr/lib/cgit/cgit.cgi")
RESULTS = Path(__file__).resolve().parent / "results"
TENANT, REPO = "bench", "pytest"
FILE = "src/_pytest/python.py"
DIR = "src/_pytest"
BIG = "doc/en/changelog.rst"  # 500 kB: over the highlighting cap
HUGE = "doc/en/reference/plugin_list.rst"  # 1.4 MB: over what a page shows
PREPARING = b"is being "  # what a page says while the background thread works
SETTLE_SECONDS = 30.0


def _variants(target: Path, path: str, count: int) -> list[str]:
    """``count`` branches ``bench-<path>-<i>``, each ``main`` plus one line at the end of
    ``path``: a file, and a blame, the server has never shown."""
    repo = pygit2.Repository(str(target))
    head = repo.revparse_single("main")
    assert isinstance(head, pygit2.Commit)
    original = head.tree[path].data
    sig = pygit2.Signature("bench", "bench@example.org", 1_800_000_000, 0)
    names = []
    for i in range(count):
        blob = repo.create_blob(original + f"\n# bench variant {i}\n".encode())
        tree = _replace(repo, head.tree, path.split("/"), blob)
        name = f"bench-{path.replace('/', '-')}-{i}"
        repo.create_commit(f"refs/heads/{name}", sig, sig, f"bench variant {i}", tree, [head.id])
        names.append(name)
    return names


def _replace(repo: pygit2.Repository, tree: pygit2.Tree, parts: list[str], blob: pygit2.Oid) -> pygit2.Oid:
    builder = repo.TreeBuilder(tree)
    if len(parts) == 1:
        builder.insert(parts[0], blob, pygit2.enums.FileMode.BLOB)
    else:
        sub = tree[parts[0]]
        assert isinstance(sub, pygit2.Tree)
        builder.insert(parts[0], _replace(repo, sub, parts[1:], blob), pygit2.enums.FileMode.TREE)
    return builder.write()


def _gitserver(git_dir: Path, data: Path, rounds: int) -> tuple[Callable[[str], testing.Result], str, str, list[str]]:
    from gitserver import config as config_mod
    from gitserver.admin import repos, tenants
    from gitserver.cmd import wiring
    from gitserver.db.session import transaction
    from gitserver.runtime import Runtime, initialise

    cfg = config_mod.load(environ={"GITSERVER_DATA_DIR": str(data)})
    initialise(cfg)
    runtime = Runtime.create(cfg)
    with transaction(runtime.sessions) as session:
        repos.create_repo(session, runtime.store, tenants.create_tenant(session, TENANT), REPO, visibility="public")
    target = runtime.store.path(TENANT, REPO)
    subprocess.run(["git", "-C", str(target), "fetch", "-q", "--no-tags", str(git_dir), "main:refs/heads/main"],
                   check=True)
    head = subprocess.run(["git", "-C", str(target), "rev-parse", "main"], check=True, capture_output=True,
                          text=True).stdout.strip()
    middle = subprocess.run(["git", "-C", str(target), "rev-list", "--skip=5000", "-1", "main"], check=True,
                            capture_output=True, text=True).stdout.strip()
    client = testing.TestClient(wiring.api_app(runtime))
    return client.simulate_get, head, middle, _variants(target, FILE, rounds + 1)


def _cgit(git_dir: Path, work: Path) -> Callable[[str, str], int]:
    rc = work / "cgitrc"
    cache = work / "cgit-cache"
    cache.mkdir()
    rc.write_text(f"cache-size=0\ncache-root={cache}\nvirtual-root=/\nenable-http-clone=0\n"
                  f"source-filter=\nenable-blame=1\nrepo.url={REPO}\nrepo.path={git_dir}\n")

    def get(path: str, query: str) -> int:
        env = {"PATH": os.environ["PATH"], "CGIT_CONFIG": str(rc), "REQUEST_METHOD": "GET",
               "PATH_INFO": path, "QUERY_STRING": query, "SCRIPT_NAME": "", "HTTP_HOST": "localhost"}
        out = subprocess.run([str(CGIT)], env=env, capture_output=True, check=False).stdout
        return 200 if out.startswith(b"Content-Type: text/html") or b"Status: 200" in out[:200] else 500

    return get


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    ours: str  # "{rev}": main, or for a first view a branch never shown before
    cgit_path: str
    cgit_query: str = ""
    first_view: bool = False


def _time(fn: Callable[[], int]) -> float:
    start = time.perf_counter()
    status = fn()
    elapsed = (time.perf_counter() - start) * 1000
    if status != 200:
        raise AssertionError(f"a page answered {status}")
    return elapsed


def _row(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"{statistics.median(samples):.1f} | {p95:.1f}"


def _settle(ours: Callable[[str], testing.Result], path: str) -> None:
    """Wait (untimed) until the page no longer says the background thread is at work."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while PREPARING in ours(path).content and time.monotonic() < deadline:
        time.sleep(0.05)


def _cases(head: str, middle: str) -> list[Case]:
    base = f"/ui/{TENANT}/{REPO}"
    return [
        Case("repository", base, "/pytest/"),
        Case("tree", f"{base}/tree?rev={{rev}}&path={DIR}", f"/pytest/tree/{DIR}"),
        Case(f"file ({FILE}, 71 kB), highlighted and kept", f"{base}/blob?rev={{rev}}&path={FILE}",
             f"/pytest/tree/{FILE}"),
        Case("the same file, first view", f"{base}/blob?rev={{rev}}&path={FILE}", f"/pytest/tree/{FILE}",
             first_view=True),
        Case(f"large file ({BIG}, 500 kB, plain)", f"{base}/blob?rev={{rev}}&path={BIG}", f"/pytest/tree/{BIG}"),
        Case(f"huge file ({HUGE}, 1.4 MB: its first 1 MiB, plain)", f"{base}/blob?rev={{rev}}&path={HUGE}",
             f"/pytest/tree/{HUGE}"),
        Case(f"blame ({FILE}), kept", f"{base}/blame?rev={{rev}}&path={FILE}", f"/pytest/blame/{FILE}"),
        Case("the same blame, first view", f"{base}/blame?rev={{rev}}&path={FILE}", f"/pytest/blame/{FILE}",
             first_view=True),
        Case("log", f"{base}/commits?rev={{rev}}", "/pytest/log/"),
        Case("log, 5,000 commits deep", f"{base}/commits?rev={{rev}}&from={middle}", "/pytest/log/", f"id={middle}"),
        Case("commit", f"{base}/commit/{head}", "/pytest/commit/", f"id={head}"),
    ]


def _measure(case: Case, rounds: int, ours: Callable[[str], testing.Result], variants: list[str],
             theirs: Callable[[str, str], int] | None) -> str:
    mine: list[float] = []
    cgits: list[float] = []
    complete = 0
    warm = case.ours.format(rev=variants[0] if case.first_view else "main")
    ours(warm)  # warm: the first request loads templates and opens the repository
    _settle(ours, warm)
    for i in range(rounds):
        path = case.ours.format(rev=variants[i + 1] if case.first_view else "main")
        started = time.perf_counter()
        answer = ours(path)
        mine.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise AssertionError(f"{path} answered {answer.status_code}")
        complete += PREPARING not in answer.content
        if case.first_view:
            _settle(ours, path)
        if theirs is not None:
            cgits.append(_time(lambda p=case.cgit_path, q=case.cgit_query: theirs(p, q)))
    other = _row(cgits) if cgits else "not installed | —"
    name = f"{case.name} ({complete} of {rounds} complete)" if case.first_view else case.name
    return f"| {name} | {_row(mine)} | {other} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("git_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    commits = subprocess.run(["git", "-C", str(args.git_dir), "rev-list", "--count", "main"], check=True,
                             capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        work = Path(tmp)
        ours, head, middle, variants = _gitserver(args.git_dir, work / "data", args.rounds)
        theirs = _cgit(args.git_dir, work) if CGIT.exists() else None
        lines = [f"Console page times on pytest's history ({commits} commits on main), {args.rounds} rounds, ms.",
                 "", "| page | gitserver median | gitserver p95 | cgit median | cgit p95 |", "|---|---|---|---|---|"]
        lines += [_measure(case, args.rounds, ours, variants, theirs) for case in _cases(head, middle)]
        text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "console-pages.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
