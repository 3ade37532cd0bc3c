"""``python -m bench.console_pages GIT_DIR [--rounds N]``: the web console's page times on a
real history, side by side with cgit (Debian's, run as CGI) serving the same repository.

gitserver's pages are served in process through falcon's test client (server time: the
page's own work, no gunicorn or socket), on a data dir of its own into which ``GIT_DIR``'s
``main`` is fetched; cgit runs as the CGI program it is, once per request (its real cost:
a process per page). Both alternate page by page. Prints one Markdown table (median and p95
in ms) and writes it to ``bench/results/console-pages.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from falcon import testing

from gitserver.console import highlight

CGIT = Path("/usr/lib/cgit/cgit.cgi")
RESULTS = Path(__file__).resolve().parent / "results"
TENANT, REPO = "bench", "pytest"
FILE = "src/_pytest/python.py"
DIR = "src/_pytest"


def _gitserver(git_dir: Path, data: Path) -> tuple[Callable[[str], int], str, str]:
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

    def get(path: str) -> int:
        return client.simulate_get(path).status_code

    return get, head, middle


def _cgit(git_dir: Path, work: Path) -> Callable[[str, str], int]:
    rc = work / "cgitrc"
    cache = work / "cgit-cache"
    cache.mkdir()
    rc.write_text(f"cache-size=0\ncache-root={cache}\nvirtual-root=/\nenable-http-clone=0\n"
                  f"source-filter=\nrepo.url={REPO}\nrepo.path={git_dir}\n")

    def get(path: str, query: str) -> int:
        env = {"PATH": os.environ["PATH"], "CGIT_CONFIG": str(rc), "REQUEST_METHOD": "GET",
               "PATH_INFO": path, "QUERY_STRING": query, "SCRIPT_NAME": "", "HTTP_HOST": "localhost"}
        out = subprocess.run([str(CGIT)], env=env, capture_output=True, check=False).stdout
        return 200 if out.startswith(b"Content-Type: text/html") or b"Status: 200" in out[:200] else 500

    return get


def _time(fn: Callable[[], int]) -> float:
    start = time.perf_counter()
    status = fn()
    elapsed = (time.perf_counter() - start) * 1000
    if status != 200:
        raise AssertionError(f"a page answered {status}")
    return elapsed


def _row(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"{statistics.median(samples):.1f} | {p95:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("git_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    commits = subprocess.run(["git", "-C", str(args.git_dir), "rev-list", "--count", "main"], check=True,
                             capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        work = Path(tmp)
        ours, head, middle = _gitserver(args.git_dir, work / "data")
        theirs = _cgit(args.git_dir, work) if CGIT.exists() else None
        base = f"/ui/{TENANT}/{REPO}"
        pages = [
            ("repository", base, "/pytest/", ""),
            ("tree", f"{base}/tree?rev=main&path={DIR}", f"/pytest/tree/{DIR}", ""),
            ("file", f"{base}/blob?rev=main&path={FILE}", f"/pytest/tree/{FILE}", ""),
            ("file, first view (not highlighted yet)", f"{base}/blob?rev=main&path={FILE}&uncached",
             f"/pytest/tree/{FILE}", ""),
            ("log", f"{base}/commits?rev=main", "/pytest/log/", ""),
            ("log, 5,000 commits deep", f"{base}/commits?rev=main&from={middle}", "/pytest/log/", f"id={middle}"),
            ("commit", f"{base}/commit/{head}", "/pytest/commit/", f"id={head}"),
        ]
        lines = [f"Console page times on pytest's history ({commits} commits on main), {args.rounds} rounds, ms.",
                 "", "| page | gitserver median | gitserver p95 | cgit median | cgit p95 |", "|---|---|---|---|---|"]
        for name, ours_path, cgit_path, cgit_query in pages:
            mine: list[float] = []
            cgits: list[float] = []
            ours(ours_path)  # warm: the first request loads templates and opens the repository
            for _ in range(args.rounds):
                if ours_path.endswith("&uncached"):
                    highlight.forget()
                mine.append(_time(lambda p=ours_path: ours(p)))
                if theirs is not None:
                    cgits.append(_time(lambda p=cgit_path, q=cgit_query: theirs(p, q)))
            other = _row(name, cgits) if cgits else "not installed | —"
            lines.append(f"| {name} | {_row(name, mine)} | {other} |")
        text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "console-pages.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
