#!/usr/bin/env bash
# Supply-chain evidence (issue 15), produced and checked for real, the way an
# air-gapped reviewer checks it (README, "Supply chain"):
#
#   1. an offline build from vendored sources (.ci/release-build.sh: cargo vendor,
#      then --offline --frozen with an empty CARGO_HOME that points at them);
#   2. the musl binary bit for bit reproducible: built again from a copy of the
#      checkout at another path, with another HOME and CARGO_HOME, same sha256;
#   3. the scratch image reproducible: built twice (--timestamp 0), same image ID;
#   4. a CycloneDX SBOM that lists exactly `cargo tree -e normal`, each crate with
#      its version, license and Cargo.lock checksum;
#   5. the dependency list cargo-auditable embeds in the binary equals the lock file;
#   6. cargo-deny's licenses, bans and sources checks, offline;
#   7. the aarch64 binary: static, and under qemu-aarch64 it prints what the x86_64
#      one prints; a two-architecture manifest list.
#
# Needs root (apt-get, buildah). Installs what is missing: Debian's musl-tools,
# gcc-aarch64-linux-gnu, qemu-user, buildah, jq, file; the two Rust targets;
# cargo-auditable, cargo-cyclonedx, cargo-deny and rust-audit-info from crates.io
# at the versions below. CARGO_TARGET_DIR is honoured. What it produced stays in
# $TARGET_DIR/supply-chain/ (SBOM, embedded list, hashes, OCI image layout).
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh
export LC_ALL=C # sort and join agree on the order

readonly X86=x86_64-unknown-linux-musl ARM=aarch64-unknown-linux-musl
# The tools, pinned: the evidence they produce is part of what is reviewed.
declare -A TOOL_VERSION=(
    [cargo-auditable]=0.7.7
    [rust-audit-info]=0.5.4
    [cargo-cyclonedx]=0.5.9
    [cargo-deny]=0.20.2
)
readonly TOOLS=(cargo-auditable rust-audit-info cargo-cyclonedx cargo-deny)

started=$(date +%s)
last=$started
timings=()
step() {
    local now
    now=$(date +%s)
    [ -n "${current:-}" ] && timings+=("$(printf '%-58s %4ss' "$current" $((now - last)))")
    current="$*"
    last=$now
    printf '\n==> supply chain: %s (%ss)\n' "$*" $((now - started))
}
fail() {
    printf 'supply chain: FAILED: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "run as root: it installs packages and builds images with buildah"

work=$(mktemp -d)
containers=()
cleanup() {
    local c
    # Background builds and installs still running after a failure.
    for c in $(jobs -p); do
        kill "$c" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    for c in "${containers[@]}"; do
        buildah --storage-driver vfs umount "$c" >/dev/null 2>&1 || true
        buildah --storage-driver vfs rm "$c" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || fail "could not read the package version from Cargo.toml"
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
mkdir -p "$target_dir"
target_dir=$(cd "$target_dir" && pwd -P)
out=$target_dir/supply-chain
rm -rf "$out"
mkdir -p "$out"

step "tools (Debian packages, Rust targets)"
install_missing musl-gcc=musl-tools aarch64-linux-gnu-gcc=gcc-aarch64-linux-gnu qemu-aarch64=qemu-user \
    buildah=buildah jq=jq file=file
for t in "$X86" "$ARM"; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done

step "tools (cargo install: ${TOOLS[*]})"
# Compiled from crates.io when missing. At opt-level 1 without LTO: they run for a
# second each, and compiling them is most of this script's time on a fresh machine
# (README, "Supply chain"). The two small ones now (the builds need cargo-auditable);
# cargo-cyclonedx and cargo-deny, minutes each, in the background while the binaries
# build, in their own target directory.
install_tool() {
    local tool=$1 want=${TOOL_VERSION[$1]} t0
    if cargo install --list | grep -qx "$tool v$want:"; then
        echo "$tool $want: installed"
        return 0
    fi
    t0=$(date +%s)
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_TARGET_DIR=$target_dir/tool-builds/$2 \
        cargo install --quiet --locked --force "$tool@$want"
    echo "$tool $want: compiled and installed in $(($(date +%s) - t0)) s"
}
install_tool cargo-auditable small
install_tool rust-audit-info small
(install_tool cargo-cyclonedx big && install_tool cargo-deny big) >"$work/tools.log" 2>&1 &
tools_pid=$!
rustc -V
cargo -V
musl-gcc --version | head -n 1
aarch64-linux-gnu-gcc --version | head -n 1
ld --version | head -n 1
buildah --version

step "1. offline build from vendored sources ($X86)"
binary=$(bash .ci/release-build.sh "$X86" | tail -n 1)
vendor=$target_dir/vendor
echo "vendored: $(find "$vendor" -mindepth 1 -maxdepth 1 -type d | wc -l) crates in $vendor ($(du -sh "$vendor" | cut -f1))"
# The proof that nothing else was used: the CARGO_HOME of the build holds its
# config.toml and cargo's own lock and cache-tracking files, no registry index, no
# downloaded crate, no git checkout.
offline_home=$target_dir/offline-cargo-home
echo "the build's CARGO_HOME holds: $(ls -A "$offline_home" | tr '\n' ' ')"
for d in registry git; do
    [ ! -e "$offline_home/$d" ] || fail "the offline build's CARGO_HOME has a $d directory: it was not offline"
done
case "$(file -b "$binary")" in
*"statically linked"* | *"static-pie linked"*) ;;
*) fail "$binary is not static: $(file -b "$binary")" ;;
esac
sha_a=$(sha256sum "$binary" | cut -d' ' -f1)
echo "$binary: $(stat -c %s "$binary") bytes, sha256 $sha_a"

step "2. reproducible: the same build from another path, HOME and CARGO_HOME (and 8. the aarch64 build beside it)"
# A copy of the checkout (what git tracks, as it is in the work tree) at another
# path, its own target directory and vendored copy, another HOME. It builds while
# the aarch64 binary builds: each release build ends in one single-threaded LTO step.
elsewhere=$work/elsewhere/another-checkout-of-pod-rebalancer
mkdir -p "$elsewhere" "$work/elsewhere/home"
git ls-files -z | while IFS= read -r -d '' f; do
    [ -e "$f" ] && cp --parents -- "$f" "$elsewhere/"
done
mkdir -p "$elsewhere/target"
cp -a "$vendor" "$elsewhere/target/vendor"
(
    cd "$elsewhere"
    export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
    export HOME=$work/elsewhere/home
    unset CARGO_TARGET_DIR
    t0=$(date +%s)
    bash .ci/release-build.sh "$X86" >"$work/binary-b" 2>"$work/build-b.log"
    echo "second build: $(($(date +%s) - t0)) s" >>"$work/build-b.log"
) &
build_b_pid=$!
t0=$(date +%s)
binary_arm=$(bash .ci/release-build.sh "$ARM" | tail -n 1)
echo "aarch64 build: $(($(date +%s) - t0)) s"
wait "$build_b_pid" || {
    cat "$work/build-b.log"
    fail "the second build failed"
}
tail -n 2 "$work/build-b.log"
binary_b=$(tail -n 1 "$work/binary-b")
sha_b=$(sha256sum "$binary_b" | cut -d' ' -f1)
echo "first:  $sha_a  $binary"
echo "second: $sha_b  $binary_b"
if [ "$sha_a" != "$sha_b" ]; then
    echo "differing bytes: $(cmp -l "$binary" "$binary_b" | wc -l)" >&2
    fail "the two builds differ: the release build is not reproducible"
fi
echo "identical"

step "8. arm64: the $ARM binary under qemu-aarch64"
file_arm=$(file -b "$binary_arm")
echo "file: $file_arm"
case "$file_arm" in
*"ARM aarch64"*"statically linked"* | *"ARM aarch64"*"static-pie linked"*) ;;
*) fail "$binary_arm is not a static aarch64 executable" ;;
esac
sha_arm=$(sha256sum "$binary_arm" | cut -d' ' -f1)
echo "$binary_arm: $(stat -c %s "$binary_arm") bytes, sha256 $sha_arm"
# The README's "Try it", on both: the same text and the same JSON document.
demo=(plan --pods fixtures/demo/pods.json --cpu fixtures/demo/cpu.json
    --deployment fixtures/demo/deployment.json --now 2026-11-26T07:00:00Z)
for arch in x86_64 aarch64; do
    run=("$binary")
    [ "$arch" = aarch64 ] && run=(qemu-aarch64 "$binary_arm")
    env -i "${run[@]}" --version >"$work/version.$arch"
    env -i "${run[@]}" "${demo[@]}" >"$work/plan.$arch"
    env -i "${run[@]}" "${demo[@]}" --output json >"$work/plan-json.$arch"
done
cat "$work/version.aarch64"
tail -n 3 "$work/plan.aarch64"
for what in version plan plan-json; do
    diff -u "$work/$what.x86_64" "$work/$what.aarch64" ||
        fail "$what: the aarch64 binary under qemu printed something else than the x86_64 one"
done
grep -q '^decision: would evict 2 pods' "$work/plan.aarch64" || fail "the aarch64 plan printed no decision"
echo "--version, plan and plan --output json: identical on x86_64 and aarch64 (qemu-aarch64)"

step "5. the dependency list embedded by cargo-auditable against Cargo.lock"
# Cargo.lock as "name version checksum" (the local package has no checksum).
awk '/^\[\[package\]\]/ { if (n) print n, v, c; n = v = c = "-" }
     /^name = /     { n = $3 } /^version = / { v = $3 } /^checksum = / { c = $3 }
     END { if (n) print n, v, c }' Cargo.lock | tr -d '"' | sort >"$work/lock"
# What the binary links, and what cargo tree -e normal lists, as "name version".
offline_cargo() { CARGO_HOME=$offline_home cargo "$@"; }
tree() {
    offline_cargo tree --offline --locked --target "$X86" --prefix none --format '{p}' "$@" |
        sed -E 's/ \(.*$//; s/ v/ /' | grep -v "^pod-rebalancer " | sort -u
}
tree -e normal,no-proc-macro >"$work/linked"
tree -e normal >"$work/normal"
echo "cargo tree -e normal: $(wc -l <"$work/normal") crates, $(wc -l <"$work/linked") of them linked (the rest are proc-macros)"
for arch in x86_64 aarch64; do
    bin=$binary
    [ "$arch" = aarch64 ] && bin=$binary_arm
    rust-audit-info "$bin" >"$out/audit-data.$arch.json"
    jq -r '.packages[] | select(.source != "local") | "\(.name) \(.version) \(.source) \(.kind // "runtime")"' \
        "$out/audit-data.$arch.json" | sort >"$work/embedded"
    [ "$(jq '[.packages[] | select(.source == "local")] | length' "$out/audit-data.$arch.json")" = 1 ] ||
        fail "$arch: the embedded list holds other local packages than ours"
    # Every embedded crate comes from crates.io at the version Cargo.lock pins...
    awk '$3 != "crates.io" { print "not from crates.io: " $0; bad = 1 } END { exit bad }' "$work/embedded" ||
        fail "$arch: the embedded list names a crate from elsewhere"
    join -v 1 <(awk '{ print $1 "@" $2 }' "$work/embedded" | sort) \
        <(awk '{ print $1 "@" $2 }' "$work/lock" | sort) >"$work/unlocked"
    [ ! -s "$work/unlocked" ] || fail "$arch: embedded but not in Cargo.lock: $(tr '\n' ' ' <"$work/unlocked")"
    # ...and what runs is exactly what cargo tree says is linked.
    diff -u "$work/linked" <(awk '$4 == "runtime" { print $1, $2 }' "$work/embedded") ||
        fail "$arch: the runtime crates embedded in the binary are not those of cargo tree -e normal"
    echo "$arch: $(awk '$4 == "runtime"' "$work/embedded" | wc -l) runtime and $(awk '$4 == "build"' "$work/embedded" | wc -l) build-time crates embedded, all in Cargo.lock, runtime = cargo tree"
done

step "tools: waiting for cargo-cyclonedx and cargo-deny"
wait "$tools_pid" || {
    cat "$work/tools.log"
    fail "installing cargo-cyclonedx or cargo-deny failed"
}
cat "$work/tools.log"

step "4. SBOM (CycloneDX) against cargo tree -e normal and Cargo.lock"
sbom=$out/pod-rebalancer.cdx.json
rm -f pod-rebalancer.cdx.json
SOURCE_DATE_EPOCH=0 CARGO_NET_OFFLINE=true offline_cargo cyclonedx --quiet --format json --spec-version 1.5 \
    --target "$X86" --no-build-deps --override-filename pod-rebalancer.cdx
mv pod-rebalancer.cdx.json "$sbom"
jq -r '.components[] | "\(.name) \(.version)"' "$sbom" | sort >"$work/sbom"
diff -u "$work/normal" "$work/sbom" || fail "the SBOM does not list exactly the crates of cargo tree -e normal"
# Each component: a license, and as hash the checksum Cargo.lock pins.
jq -r '.components[] | [.name, .version,
        ((.hashes // []) | map(select(.alg == "SHA-256")) | .[0].content // "-"),
        ((.licenses // []) | map(.expression // .license.id // .license.name) | join(" AND ") | if . == "" then "-" else . end)]
      | @tsv' "$sbom" | sort >"$work/sbom-detail"
mismatch=$(join -t $'\t' <(awk '{ print $1 "@" $2 "\t" $3 }' "$work/lock" | sort) \
    <(awk -F'\t' '{ print $1 "@" $2 "\t" $3 "\t" $4 }' "$work/sbom-detail" | sort) |
    awk -F'\t' '$2 != $3 || $4 == "-" { print $1 ": lock " $2 ", SBOM " $3 ", license " $4 }')
[ -z "$mismatch" ] || fail "SBOM and Cargo.lock disagree: $mismatch"
joined=$(join -t $'\t' <(awk '{ print $1 "@" $2 }' "$work/lock" | sort) \
    <(awk -F'\t' '{ print $1 "@" $2 }' "$work/sbom-detail" | sort) | wc -l)
[ "$joined" = "$(wc -l <"$work/normal")" ] && [ "$(wc -l <"$work/sbom-detail")" = "$joined" ] ||
    fail "SBOM components are not one per crate of Cargo.lock"
echo "$(wc -l <"$work/sbom") components = cargo tree -e normal; every one with a license and Cargo.lock's checksum"
awk -F'\t' '{ printf "  %-20s %-10s %s\n", $1, $2, $4 }' "$work/sbom-detail"

step "6. cargo deny: licenses, bans, sources (offline; advisories need a database)"
offline_cargo deny --offline --locked check bans licenses sources 2>&1 | tee "$out/deny.txt"

step "3. reproducible images (buildah --timestamp 0), and the arm64 manifest list"
image=localhost/pod-rebalancer-sc
bud() { # CONTEXT ARCH TAG
    buildah --storage-driver vfs bud --quiet --timestamp 0 --identity-label=false \
        --platform "linux/$2" --target prebuilt -f "$PWD/Containerfile" -t "$3" "$1" >/dev/null
    buildah --storage-driver vfs inspect --type image --format '{{.FromImageID}}' "$3"
}
for ctx in one two; do
    mkdir -p "$work/context-$ctx/amd64" "$work/context-$ctx/arm64"
    cp "$binary" "$work/context-$ctx/amd64/pod-rebalancer"
    cp "$binary_arm" "$work/context-$ctx/arm64/pod-rebalancer"
done
declare -A image_id
for arch in amd64 arm64; do
    tag=$image:$version-$arch
    buildah --storage-driver vfs rmi "$tag" >/dev/null 2>&1 || true
    first=$(bud "$work/context-one" "$arch" "$tag")
    buildah --storage-driver vfs rmi "$tag" >/dev/null
    second=$(bud "$work/context-two" "$arch" "$tag")
    echo "$arch: $first, then $second"
    [ "$first" = "$second" ] || fail "$arch: two builds of the image have different IDs"
    image_id[$arch]=$second
    got_arch=$(buildah --storage-driver vfs inspect --type image --format '{{.OCIv1.Architecture}}' "$tag")
    [ "$got_arch" = "$arch" ] || fail "the $arch image says it is $got_arch"
    # The image holds exactly the reproducible binary.
    ctr=$(buildah --storage-driver vfs from --quiet --platform "linux/$arch" "$tag")
    containers+=("$ctr")
    mnt=$(buildah --storage-driver vfs mount "$ctr")
    want=$sha_a
    [ "$arch" = arm64 ] && want=$sha_arm
    [ "$(sha256sum "$mnt/pod-rebalancer" | cut -d' ' -f1)" = "$want" ] ||
        fail "the $arch image does not hold the binary built above"
done
list=$image:$version
buildah --storage-driver vfs manifest rm "$list" >/dev/null 2>&1 || true
buildah --storage-driver vfs manifest create "$list" >/dev/null
for arch in amd64 arm64; do
    buildah --storage-driver vfs manifest add "$list" "$image:$version-$arch" >/dev/null
done
buildah --storage-driver vfs manifest inspect "$list" |
    jq -r '.manifests[] | "  \(.platform.os)/\(.platform.architecture) \(.digest)"'
[ "$(buildah --storage-driver vfs manifest inspect "$list" | jq -r '[.manifests[].platform.architecture] | sort | join(",")')" = amd64,arm64 ] ||
    fail "the manifest list does not hold amd64 and arm64"
# The list and both images as an OCI layout a reviewer can load (skopeo, podman).
buildah --storage-driver vfs manifest push --quiet --all --format oci "$list" "oci:$out/image" 2>/dev/null
echo "OCI layout: $out/image ($(du -sh "$out/image" | cut -f1))"

step "summary"
{
    echo "$sha_a  $X86/pod-rebalancer"
    echo "$sha_arm  $ARM/pod-rebalancer"
} >"$out/SHA256SUMS"
cat "$out/SHA256SUMS"
echo "image IDs: amd64 ${image_id[amd64]}, arm64 ${image_id[arm64]}"
echo "evidence in $out: $(cd "$out" && echo *)"
step "end"
printf '%s\n' "${timings[@]}"
echo "time: $(($(date +%s) - started)) s"
echo "supply chain: all checks passed"
