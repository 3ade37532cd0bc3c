"""Several gitservers on one host as one user (replicas, or a test server beside a real one)
share nothing outside their data dirs: in particular not gunicorn's per-user control socket,
which each API process would take from the others and delete when it stops."""

from __future__ import annotations

from pathlib import Path

from tests.functional.conftest import GitServer


def test_servers_on_one_host_leave_the_users_home_alone(tmp_path: Path, git_env: dict[str, str]) -> None:
    home, runtime_dir = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    runtime_dir.mkdir(mode=0o700)
    servers = [GitServer(tmp_path / f"data{n}", f"sqlite:///{tmp_path / f'data{n}' / 'gitserver.db'}",
                         git_env, extra_env={"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime_dir)})
               for n in (1, 2)]
    try:
        for srv in servers:
            srv.start()
        for srv in servers:
            assert srv.api("GET", "/api/v1/tenants").status_code == 200
        assert sorted(p.name for p in home.iterdir()) == []
        assert sorted(p.name for p in runtime_dir.iterdir()) == []
        assert "Control socket" not in servers[0].logs() + servers[1].logs()
    finally:
        for srv in servers:
            srv.stop()
