#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages tapstack's tests use as kernel-side
# peers, when they are missing. Needs root (or sudo) and Go 1.26 on PATH.
set -euo pipefail

pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || pkgs+=("$2"); }
need ip iproute2
need ping iputils-ping
need python3 python3
need nc netcat-openbsd
need socat socat
need iperf3 iperf3
need dnsmasq dnsmasq-base
need curl curl
need sysctl procps
need setpriv util-linux
need nsenter util-linux
need slirp4netns slirp4netns
need pasta passt
need hping3 hping3
need tcpdump tcpdump
need tshark tshark
need podman podman
need runc runc
need busybox busybox-static
need rootlesskit rootlesskit
need newuidmap uidmap
# the lab masquerades the traffic of nodes behind an uplink with nft
need nft nftables
# scripts/vendor-gvisor.sh applies the gVisor patches with patch(1)
need patch patch
# go test -race needs cgo, and cgo a C compiler
need gcc gcc
# scapy for Debian's python3 (the injection test crafts malformed frames)
/usr/bin/python3 -c 'import scapy' >/dev/null 2>&1 || pkgs+=(python3-scapy)

if ((${#pkgs[@]})); then
	SUDO=""
	if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
	echo "installing: ${pkgs[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
	echo "Go is not on PATH: install Go 1.26 from https://go.dev/dl/ first" >&2
	exit 1
fi

# rootlesskit 2 (--net=pasta), beside Debian's rootlesskit 1: the pasta
# tests find it in /opt/rootlesskit2.
if [ ! -x /opt/rootlesskit2/rootlesskit ]; then
	SUDO=""
	if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
	echo "installing: rootlesskit v2.3.6 into /opt/rootlesskit2"
	$SUDO env "PATH=$PATH" GOBIN=/opt/rootlesskit2 GOFLAGS=-mod=mod go install github.com/rootless-containers/rootlesskit/v2/cmd/rootlesskit@v2.3.6
fi
