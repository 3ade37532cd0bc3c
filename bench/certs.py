"""SSH certificates (``--only certificates``): ls-remote with a certificate of a tenant CA
against the same ls-remote with the plain key, both on gitserver, alternating, in one run
(docs/certificates.md). A certificate login costs an extra CA lookup and the principal
records; the target is that this stays within noise of a key lookup.

The table's "openssh" column holds the plain-key figure here (the note says so): OpenSSH is
not involved in this comparison.
"""

from __future__ import annotations

import dataclasses
import subprocess
from typing import TYPE_CHECKING

from bench.servers import TENANT, USER
from bench.workload import Client, Sample, measure, median

if TYPE_CHECKING:
    from bench.__main__ import Bench

PRINCIPAL = "bench@certificates"
# Within noise: a few ms on a ~100 ms ls-remote.
TARGET_RATIO = 1.10


def _sign(bench: Bench) -> Client:
    """A CA trusted by the bench tenant, a principal record for the bench user, and a new key
    (registered nowhere) with its certificate; the client that logs in with it."""
    from gitserver.admin import ssh_cas, tenants, users

    assert bench.client is not None
    where = bench.work / "certs"
    where.mkdir(parents=True, exist_ok=True)
    for name in ("ca", "id_cert"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(where / name)],
                       check=True)
    # OpenSSH offers <key>-cert.pub beside the key by itself.
    subprocess.run(["ssh-keygen", "-q", "-s", str(where / "ca"), "-I", "bench", "-n", PRINCIPAL, "-V", "-5m:+1d",
                    str(where / "id_cert.pub")], check=True)
    with bench.gs.db() as session:
        tenant = tenants.get_tenant(session, TENANT)
        ssh_cas.add_ca(session, tenant, (where / "ca.pub").read_text())
        ssh_cas.add_principal(session, users.get_user(session, tenant, USER), PRINCIPAL)
    return dataclasses.replace(bench.client, key=where / "id_cert")


def run(bench: Bench) -> None:
    from bench.__main__ import Row

    assert bench.client is not None
    certified = _sign(bench)
    url = bench.gs.url("small")
    samples: dict[str, list[Sample]] = {"certificate": [], "key": []}
    clients = [("key", bench.client), ("certificate", certified)]

    def ls_remote(client: Client) -> Sample:
        return measure(bench.gs, lambda: bench.run_git("ls-remote", url, client=client))

    for i in range(max(bench.p.runs, 5)):
        for name, client in (clients if i % 2 == 0 else list(reversed(clients))):
            samples[name].append(ls_remote(client))
    cert, key = median(samples["certificate"]), median(samples["key"])
    failures = sum(not s.ok for runs in samples.values() for s in runs)
    row = Row("ls-remote with a certificate (openssh column: plain key)", "s", cert, key,
              f"ratio ≤ {TARGET_RATIO}", cert / key <= TARGET_RATIO and not failures,
              note=f"both on gitserver, {len(samples['key'])} runs each, alternating"
                   + (f"; {failures} failed runs" if failures else ""))
    bench.rows.append(row)
