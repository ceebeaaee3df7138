#!/usr/bin/env bash
# Makes tapstack answer as slirp4netns: a symlink named slirp4netns to the
# tapstack binary, in DIR (default /usr/local/libexec/tapstack), for
# rootlesskit --slirp4netns-binary=DIR/slirp4netns or podman's
# network_cmd_path = "DIR/slirp4netns" (containers.conf, [engine]).
#
#   scripts/install-slirp4netns-link.sh [TAPSTACK [DIR]]
set -euo pipefail
bin=${1:-$(command -v tapstack || true)}
dir=${2:-/usr/local/libexec/tapstack}
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
	echo "usage: $0 [PATH-TO-TAPSTACK [DIR]] (no tapstack binary found on PATH)" >&2
	exit 2
fi
bin=$(readlink -f "$bin")
mkdir -p "$dir"
ln -sfn "$bin" "$dir/slirp4netns"
"$dir/slirp4netns" --version >/dev/null
echo "$dir/slirp4netns -> $bin"
echo "podman:      network_cmd_path = \"$dir/slirp4netns\"   (containers.conf, [engine])"
echo "rootlesskit: --net=slirp4netns --slirp4netns-binary=$dir/slirp4netns"
