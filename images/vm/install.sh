#!/bin/sh
# Install a gitserver release on Debian 12 (bookworm) and enable it under systemd.
# Used by build.sh (virt-customize, at image build time) and by user-data (cloud-init, at
# first boot). Usage: install.sh <release.tar.gz> [serve|split]
#   serve  one unit, gitserver.service (SQLite or PostgreSQL)        [default]
#   split  gitserver-ssh, gitserver-api and gitserver-worker units (replicas; PostgreSQL)
set -eu
release=${1:?usage: install.sh <release.tar.gz> [serve|split]}
mode=${2:-serve}
prefix=/opt/gitserver

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv git openssh-client ca-certificates

getent group gitserver >/dev/null || groupadd --system gitserver
getent passwd gitserver >/dev/null || useradd --system --gid gitserver \
    --home-dir /var/lib/gitserver --no-create-home --shell /usr/sbin/nologin gitserver
install -d -o gitserver -g gitserver -m 0750 /var/lib/gitserver
install -d -m 0755 /etc/gitserver

# The release is unpacked to $prefix/app (example config, systemd units, docs) and installed
# into the venv as a normal wheel: hooks and migrations are package data.
rm -rf "$prefix/app.new"
install -d "$prefix/app.new"
tar -xzf "$release" -C "$prefix/app.new" --strip-components=1
[ -d "$prefix/venv" ] || python3 -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install --no-cache-dir --upgrade pip
rm -rf "$prefix/app.old"
[ ! -d "$prefix/app" ] || mv "$prefix/app" "$prefix/app.old"
mv "$prefix/app.new" "$prefix/app"
"$prefix/venv/bin/pip" install --no-cache-dir "$prefix/app"

[ -f /etc/gitserver/gitserver.toml ] || \
    install -m 0640 -g gitserver "$prefix/app/etc/gitserver.toml.example" /etc/gitserver/gitserver.toml
install -m 0644 "$prefix/app/etc/systemd/"*.service /etc/systemd/system/
systemctl daemon-reload || true   # no systemd running inside virt-customize

# Create the data dir contents (host key, database) as the service user, with the same
# environment the units get (the database URL may be there).
if [ -f /etc/gitserver/environment ]; then set -a; . /etc/gitserver/environment; set +a; fi
runuser -u gitserver -- env GITSERVER_CONFIG=/etc/gitserver/gitserver.toml \
    "$prefix/venv/bin/gitserver" init

case "$mode" in
    serve) systemctl enable gitserver.service ;;
    split) systemctl enable gitserver-ssh.service gitserver-api.service gitserver-worker.service ;;
    *) echo "install.sh: unknown mode $mode (serve or split)" >&2; exit 2 ;;
esac
echo "gitserver installed in $prefix ($mode)"
