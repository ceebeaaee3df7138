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
#
# With --check it changes nothing: it builds the tree in a temporary
# directory the same way and compares it with third_party/gvisor byte for
# byte, every file both ways. It exits 0 when they are equal and 1, naming
# each file that differs, is missing or is extra, when they are not.
#
#   scripts/vendor-gvisor.sh --check
#
# Needs go, patch (Debian's package patch; scripts/install-deps.sh
# installs it) and coreutils, findutils, diffutils, sed and awk.
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
case "$#:${1-}" in
0:) ;;
1:--check) check=true ;;
*)
	echo "usage: scripts/vendor-gvisor.sh [--check]" >&2
	exit 2
	;;
esac

for tool in go patch awk sed find sort comm diff mktemp; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "vendor-gvisor: $tool is not on PATH (scripts/install-deps.sh installs what it needs)" >&2
		exit 2
	}
done

out=third_party/gvisor
shopt -s nullglob
patches=(third_party/gvisor-patches/*.patch)
version=$(awk '$1 == "gvisor.dev/gvisor" && $2 ~ /^v/ { print $2; exit }' go.mod)
[[ -n "$version" ]] || { echo "vendor-gvisor: go.mod requires no version of gvisor.dev/gvisor" >&2; exit 2; }

# Everything is built in $tmp, removed on every way out.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 141' PIPE

# go.mod without its replace of gVisor: the module is downloaded and the
# packages to copy are listed against the unpatched upstream module.
cp go.mod "$tmp/go.mod"
cp go.sum "$tmp/go.sum"
go mod edit -dropreplace gvisor.dev/gvisor "$tmp/go.mod"

json=$(cd "$tmp" && go mod download -json "gvisor.dev/gvisor@$version") || {
	echo "vendor-gvisor: go mod download gvisor.dev/gvisor@$version failed:" >&2
	echo "$json" >&2
	exit 1
}
src=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$json")
[[ -d "$src" ]] || { echo "vendor-gvisor: gvisor.dev/gvisor@$version is not in the module cache" >&2; exit 1; }

mapfile -t pkgs < <(go list -modfile "$tmp/go.mod" -deps -test ./... | grep '^gvisor.dev/gvisor/' | sort -u)
((${#pkgs[@]})) || { echo "vendor-gvisor: tapstack imports no gVisor package?" >&2; exit 1; }

# The tree, built in $gen.
gen=$tmp/gvisor
mkdir -p "$gen"
cp "$src/go.mod" "$src/LICENSE" "$gen/"
# Each package's files but its tests; a process per package would cost
# seconds.
rels=("${pkgs[@]#gvisor.dev/gvisor/}")
mkdir -p "${rels[@]/#/$gen/}"
(cd "$src" && find "${rels[@]}" -maxdepth 1 -type f ! -name '*_test.go' -exec cp --parents -t "$gen" {} +)
chmod -R u+w "$gen"
{
	echo "gvisor.dev/gvisor $version: ${#pkgs[@]} packages copied by scripts/vendor-gvisor.sh; patches:"
	for f in "${patches[@]}"; do
		echo "  ${f##*/}"
	done
} > "$gen/VERSION"
# A patch applies exactly (no fuzz) or the script fails; no .orig files.
for f in "${patches[@]}"; do
	patch -s --fuzz=0 --no-backup-if-mismatch -d "$gen" -p1 < "$f" || {
		echo "vendor-gvisor: $f does not apply to gvisor.dev/gvisor@$version" >&2
		exit 1
	}
done

if ! $check; then
	rm -rf "$out"
	mkdir -p "$(dirname "$out")"
	cp -R "$gen" "$out"
	echo "vendor-gvisor: $out holds ${#pkgs[@]} packages of gvisor.dev/gvisor@$version and ${#patches[@]} patches"
	exit 0
fi

# --check: every file (anything but a directory) of both trees, by path,
# and diff for their bytes (one process: a cmp per file costs seconds).
list() {
	if [[ -d "$1" ]]; then
		find "$1" ! -type d "${@:2}" -printf '%P\n' | LC_ALL=C sort
	fi
}
list "$gen" > "$tmp/want"
list "$out" > "$tmp/have"
list "$gen" -perm -u+x > "$tmp/want-x"
list "$out" -perm -u+x > "$tmp/have-x"
bad=()
while IFS= read -r f; do
	bad+=("missing: $out/$f")
done < <(LC_ALL=C comm -23 "$tmp/want" "$tmp/have")
while IFS= read -r f; do
	bad+=("extra:   $out/$f")
done < <(LC_ALL=C comm -13 "$tmp/want" "$tmp/have")
# diff's lines "Files $gen/F and $out/F differ" and, for a symbolic link
# against a file, "File $gen/F is a ... while file $out/F is a ..."; its
# "Only in" lines were counted above. diff exits 1 on a difference, 2 on
# trouble.
: > "$tmp/diff"
if [[ -d "$out" ]]; then
	rc=0
	LC_ALL=C diff -rq --no-dereference "$gen" "$out" > "$tmp/diff" || rc=$?
	((rc <= 1)) || { echo "vendor-gvisor: diff -rq $gen $out failed" >&2; exit 2; }
fi
while IFS= read -r line; do
	case "$line" in
	"Files $gen/"*" differ")
		f=${line#"Files $gen/"}
		f=${f%" and $out/"*}
		;;
	"File $gen/"*)
		f=${line#"File $gen/"}
		f=${f%" is a "*" while file $out/"*}
		;;
	*) continue ;;
	esac
	bad+=("differs: $out/$f")
done < "$tmp/diff"
while IFS= read -r f; do
	bad+=("mode:    $out/$f (executable bit)")
done < <(LC_ALL=C comm -12 "$tmp/want" "$tmp/have" | LC_ALL=C comm -12 - <(LC_ALL=C comm -3 "$tmp/want-x" "$tmp/have-x" | sed 's/^\t//'))

if ((${#bad[@]})); then
	{
		echo "vendor-gvisor: $out differs from what scripts/vendor-gvisor.sh makes of gvisor.dev/gvisor@$version and ${#patches[@]} patches:"
		printf '  %s\n' "${bad[@]}"
		echo "run scripts/vendor-gvisor.sh to rebuild it"
	} >&2
	exit 1
fi
echo "vendor-gvisor: $out matches gvisor.dev/gvisor@$version with ${#patches[@]} patches ($(wc -l < "$tmp/want") files)"
