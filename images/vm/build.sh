#!/bin/sh
# Build a VM image with gitserver preinstalled, from a Debian 12 cloud image:
#   images/vm/build.sh debian-12-genericcloud-amd64.qcow2 [serve|split]
# Needs libguestfs-tools (virt-customize) and network access for apt/pip during the build.
# The release is `git archive` of the current checkout, so the image runs exactly this tree.
set -eu
image=${1:?usage: build.sh <debian-12 cloud image.qcow2> [serve|split]}
mode=${2:-serve}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
release=$(mktemp --suffix=.tar.gz)
trap 'rm -f "$release"' EXIT
git -C "$top" archive --format=tar.gz --prefix=gitserver/ -o "$release" HEAD

virt-customize -a "$image" \
    --copy-in "$release:/root" \
    --copy-in "$here/install.sh:/root" \
    --run-command "sh /root/install.sh /root/$(basename "$release") $mode" \
    --run-command "rm -f /root/install.sh /root/$(basename "$release")" \
    --firstboot-command "systemctl restart ssh || true"
echo "built $image ($mode)"
