#!/usr/bin/env bash
# Rebuilds third_party/gvisor: the packages of the pinned gVisor module
# (the version go.mod requires) that tapstack builds and tests, copied
# from the module cache, with the patches of third_party/gvisor-patches
# applied in name order. go.mod replaces gvisor.dev/gvisor with it.
#
# Run it after changing the gVisor version, importing another gVisor
# package, or editing a patch:
#
#   scripts/vendor-gvisor.sh
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(awk '$1 == "gvisor.dev/gvisor" && $2 ~ /^v/ { print $2; exit }' go.mod)
src=$(go mod download -json "gvisor.dev/gvisor@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[[ -d "$src" ]] || { echo "vendor-gvisor: gvisor.dev/gvisor@$version is not in the module cache" >&2; exit 1; }

# The packages to copy, listed against the unpatched module.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp go.mod "$tmp/go.mod"
cp go.sum "$tmp/go.sum"
go mod edit -dropreplace gvisor.dev/gvisor "$tmp/go.mod"
mapfile -t pkgs < <(go list -modfile "$tmp/go.mod" -deps -test ./... | grep '^gvisor.dev/gvisor/' | sort -u)

out=third_party/gvisor
rm -rf "$out"
mkdir -p "$out"
cp "$src/go.mod" "$src/LICENSE" "$out/"
for p in "${pkgs[@]}"; do
	rel=${p#gvisor.dev/gvisor/}
	mkdir -p "$out/$rel"
	find "$src/$rel" -maxdepth 1 -type f ! -name '*_test.go' -exec cp {} "$out/$rel/" \;
done
chmod -R u+w "$out"
{
	echo "gvisor.dev/gvisor $version: ${#pkgs[@]} packages copied by scripts/vendor-gvisor.sh; patches:"
	for f in third_party/gvisor-patches/*.patch; do
		echo "  $(basename "$f")"
	done
} > "$out/VERSION"
for f in third_party/gvisor-patches/*.patch; do
	patch -s -d "$out" -p1 < "$f"
done
echo "vendor-gvisor: $out holds ${#pkgs[@]} packages of gvisor.dev/gvisor@$version and $(ls third_party/gvisor-patches/*.patch | wc -l) patches"
