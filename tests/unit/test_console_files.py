"""How the console shows a file within the time a page has: the background thread and what it
keeps (gitserver.console.prepare), plain and highlighted text, the caps (fileview), and blame
with its bounds (blame), on real pygit2 repositories built here."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pygit2
import pytest

from gitserver.console import blame, fileview, highlight, prepare
from gitserver.console.prepare import Prepared

PYTHON = "def f(x):\n    return '<script>' + x  # <b>\n"


def _wait_for(prepared: Prepared, key: str, seconds: float = 10.0) -> object:
    deadline = time.monotonic() + seconds
    while prepared.get(key) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return prepared.get(key)


def test_slow_work_answers_none_in_time_then_is_kept() -> None:
    prepared = Prepared()
    release = threading.Event()
    calls: list[int] = []

    def work() -> str:
        calls.append(1)
        release.wait(10)
        return "done"

    started = time.monotonic()
    assert prepared.prepare("k", work, wait=0.05, cost=len) is None
    assert time.monotonic() - started < 1.0  # the page did not wait for the work
    assert prepared.prepare("k", work, wait=0.0, cost=len) is None  # the same job, not a second one
    release.set()
    assert _wait_for(prepared, "k") == "done"
    assert prepared.prepare("k", work, wait=0.0, cost=len) == "done" and calls == [1]


def test_quick_work_is_answered_within_the_wait() -> None:
    prepared = Prepared()
    assert prepared.prepare("k", lambda: "v", wait=5.0, cost=len) == "v"
    assert prepared.now("n", lambda: "now", len) == "now" and prepared.get("n") == "now"


def test_work_no_page_waits_for_starts_after_the_page_is_answered() -> None:
    """With ``wait`` 0 the page gets None at once, and the thread starts the job only
    UNWAITED_START_SECONDS later (so it does not take the GIL from that page)."""
    prepared = Prepared()
    started: list[float] = []
    asked = time.monotonic()
    assert prepared.prepare("k", lambda: str(started.append(time.monotonic())), wait=0, cost=len) is None
    assert time.monotonic() - asked < 1.0
    assert _wait_for(prepared, "k") == "None"
    assert started[0] - asked >= prepare.UNWAITED_START_SECONDS


def test_too_many_waiting_jobs_start_nothing() -> None:
    prepared = Prepared(max_pending=2)
    release = threading.Event()

    def work() -> str:
        release.wait(10)
        return "x"

    assert prepared.prepare("a", work, wait=0, cost=len) is None
    assert prepared.prepare("b", work, wait=0, cost=len) is None
    ran: list[int] = []
    assert prepared.prepare("c", lambda: str(ran.append(1)), wait=0.2, cost=len) is None
    assert prepared.pending() == 2 and not ran
    release.set()
    assert _wait_for(prepared, "a") == "x" and _wait_for(prepared, "b") == "x"
    assert prepared.prepare("c", lambda: "c", wait=5, cost=len) == "c"  # asked again later: now it runs


def test_kept_results_are_bounded_by_cost_least_recent_first() -> None:
    prepared = Prepared(max_cost=10)
    for key in ("a", "b", "c"):
        prepared.now(key, lambda: "xxxx", len)  # cost 4 each: the third drops the oldest
    assert prepared.get("a") is None and prepared.get("b") == "xxxx" == prepared.get("c")
    prepared.get("b")
    prepared.now("d", lambda: "yyyy", len)
    assert prepared.get("c") is None and prepared.get("b") == "xxxx"
    prepared.now("big", lambda: "z" * 11, len)
    assert prepared.get("big") is None  # larger than the whole budget: never kept


def test_failed_work_keeps_nothing_and_is_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    prepared = Prepared()

    def boom() -> str:
        raise ValueError("bad")

    assert prepared.prepare("k", boom, wait=5, cost=len) is None
    assert "preparing k failed" in caplog.text and prepared.pending() == 0
    assert prepared.prepare("k", lambda: "ok", wait=5, cost=len) == "ok"


def test_plain_text_is_escaped_in_the_highlighted_markup() -> None:
    plain = highlight.plain(PYTHON)
    coloured = highlight.highlighted("a.py", PYTHON)
    assert "<script>" not in plain and "&lt;script&gt;" in plain and "&lt;b&gt;" in plain
    assert "<script>" not in coloured and "&lt;script&gt;" in coloured and 'style="' not in coloured
    assert plain.count('<span class="linenos">') == coloured.count('<span class="linenos">') == 2
    assert plain.startswith('<div class="highlight"><pre>') and coloured.startswith('<div class="highlight"><pre>')
    assert highlight.plain("a\nb").count("linenos") == 2 and highlight.line_count("a\nb") == 2
    assert highlight.lexer_name("x.py") == "Python" and highlight.lexer_name("x.unknown-kind") == "Text only"


def test_text_of_refuses_binary_and_cuts_large_files() -> None:
    assert fileview.text_of(b"a\0b") is None and fileview.text_of(b"\xff\xfe") is None
    whole = fileview.text_of("é\n".encode() * 3)
    assert whole is not None and not whole.cut and whole.size == 9 and whole.text == "é\n" * 3
    # Cut in the middle of "é" (2 bytes): that character goes, not the file.
    cut = fileview.text_of("é".encode() * 10, max_bytes=5)
    assert cut is not None and cut.cut and cut.text == "éé" and cut.size == 4
    lines = fileview.text_of(b"1\n2\n3\n4\n", max_lines=2)
    assert lines is not None and lines.cut and lines.text == "1\n2\n"
    exact = fileview.text_of(b"1\n2\n", max_lines=2)
    assert exact is not None and not exact.cut


def _text(text: str) -> fileview.Text:
    found = fileview.text_of(text.encode())
    assert found is not None
    return found


def test_a_small_file_is_highlighted_in_the_request() -> None:
    shown = fileview.source(Prepared(), "blob1", "a.py", _text(PYTHON))
    assert shown.state == fileview.State.DONE and '<span class="k">def</span>' in shown.html


def test_a_larger_file_is_plain_first_and_highlighted_once_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fileview, "WAIT_SECONDS", 0.0)
    prepared = Prepared()
    text = _text(PYTHON * (fileview.HIGHLIGHT_NOW_BYTES // len(PYTHON) + 1))
    first = fileview.source(prepared, "blob2", "a.py", text)
    if first.state == fileview.State.PREPARING:  # the usual case; the thread may be quicker
        assert '<span class="k">' not in first.html and "&lt;script&gt;" in first.html
        assert _wait_for(prepared, "highlight:blob2:Python") is not None
    later = fileview.source(prepared, "blob2", "a.py", text)
    assert later.state == fileview.State.DONE and '<span class="k">def</span>' in later.html


def test_a_file_too_large_to_highlight_in_the_wait_is_plain_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over HIGHLIGHT_IN_WAIT_BYTES the page does not wait for the thread (a long wait here
    would give the highlighted text)."""
    monkeypatch.setattr(fileview, "WAIT_SECONDS", 10.0)
    prepared = Prepared()
    text = _text(PYTHON * (fileview.HIGHLIGHT_IN_WAIT_BYTES // len(PYTHON) + 1))
    asked = time.monotonic()
    first = fileview.source(prepared, "blob3", "a.py", text)
    assert time.monotonic() - asked < 5.0
    assert first.state == fileview.State.PREPARING and "&lt;script&gt;" in first.html
    assert _wait_for(prepared, "highlight:blob3:Python") is not None
    assert fileview.source(prepared, "blob3", "a.py", text).state == fileview.State.DONE


def test_files_over_the_caps_are_plain_or_cut() -> None:
    many = _text("x = 1\n" * (fileview.MAX_HIGHLIGHT_LINES + 1))
    shown = fileview.source(Prepared(), "b3", "a.py", many)
    assert shown.state == fileview.State.TOO_LARGE and '<span class="mi">' not in shown.html
    huge = fileview.text_of(b"y\n" * (fileview.MAX_SHOWN_LINES + 5))
    assert huge is not None
    cut = fileview.source(Prepared(), "b4", "a.py", huge)
    assert cut.state == fileview.State.CUT and cut.lines == fileview.MAX_SHOWN_LINES
    # Markdown too large to render is too large to highlight too: its source, plain.
    assert fileview.MAX_MARKDOWN_BYTES >= fileview.MAX_HIGHLIGHT_BYTES
    line = "# <t> " + "x" * 200 + "\n"
    big_md = _text(line * (fileview.MAX_MARKDOWN_BYTES // len(line) + 1))
    doc = fileview.document(Prepared(), "b5", "a.md", big_md)
    assert doc.state == fileview.State.TOO_LARGE and not doc.rendered and "&lt;t&gt;" in doc.html


def test_markdown_is_rendered_and_runs_nothing() -> None:
    doc = fileview.document(Prepared(), "b6", "a.md", _text("# Hi <script>x</script>\n"))
    assert doc.rendered and doc.state == fileview.State.DONE
    assert "<h1>" in doc.html and "<script>" not in doc.html


# --- blame ---------------------------------------------------------------------------------

def _history(tmp_path: Path, versions: list[str]) -> tuple[Path, list[str]]:
    """A bare repository whose ``f.txt`` takes each text in turn, one commit each, by author
    ``a<i>``; the commit ids, oldest first."""
    path = tmp_path / "h.git"
    repo = pygit2.init_repository(str(path), bare=True)
    ids: list[str] = []
    for i, text in enumerate(versions):
        author = pygit2.Signature(f"a{i}", f"a{i}@example.org", 1_700_000_000 + i, 0)
        committer = pygit2.Signature("committer", "c@example.org", 1_700_000_000 + i, 0)
        builder = repo.TreeBuilder()
        builder.insert("f.txt", repo.create_blob(text.encode()), pygit2.enums.FileMode.BLOB)
        parents = [pygit2.Oid(hex=ids[-1])] if ids else []
        ids.append(str(repo.create_commit("refs/heads/main", author, committer, f"change {i} <b>",
                                          builder.write(), parents)))
    return path, ids


def test_blame_names_the_commit_and_author_of_each_line(tmp_path: Path) -> None:
    path, ids = _history(tmp_path, ["one\ntwo\n", "one\nTWO\n", "one\nTWO\nthree\n"])
    found = blame.blame(path, ids[-1], "f.txt")
    assert found.oldest is None  # the whole history is shorter than the bound
    by_line = {h.start: h for h in found.hunks}
    assert (by_line[1].commit, by_line[1].author, by_line[1].summary) == (ids[0], "a0", "change 0 <b>")
    assert by_line[2].commit == ids[1] and by_line[3].commit == ids[2]
    assert not any(h.older for h in found.hunks)
    rows = blame.rows(found, "one\nTWO\nthree\n")
    assert [(r.numbers, r.code) for r in rows] == [("1", "one"), ("2", "TWO"), ("3", "three")]


def test_blame_stops_at_its_depth_and_says_so(tmp_path: Path) -> None:
    versions = ["base\n" + "".join(f"line {j}\n" for j in range(i)) for i in range(6)]
    path, ids = _history(tmp_path, versions)
    found = blame.blame(path, ids[-1], "f.txt", depth=2)
    assert found.oldest == ids[3]  # two first parents back from ids[5]
    older = [h for h in found.hunks if h.older]
    assert older and all(h.commit == ids[3] for h in older)
    assert sum(h.count for h in older) == 4  # "base" and lines 0-2, all from ids[3] or before
    newer = {h.commit for h in found.hunks if not h.older}
    assert newer == {ids[4], ids[5]}
    assert blame.oldest_commit(pygit2.Repository(str(path))[ids[1]], depth=5) is None


def test_blame_caps() -> None:
    assert not blame.too_large(blame.MAX_BYTES, blame.MAX_LINES)
    assert blame.too_large(blame.MAX_BYTES + 1, 1) and blame.too_large(1, blame.MAX_LINES + 1)
