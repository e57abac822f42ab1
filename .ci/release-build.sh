#!/usr/bin/env bash
# The release build, done one way everywhere: CI's packaging and supply-chain checks,
# the benchmark's musl binary, the Containerfile's builder stage, and a reviewer
# (README, "Supply chain"). Builds the static binary for one target
#
#   * from vendored sources: `cargo vendor` writes them into $TARGET_DIR/vendor
#     (generated, never committed), and the build runs with --offline --frozen and an
#     empty CARGO_HOME whose only setting points crates.io at that directory;
#   * with cargo-auditable, so the binary carries its dependency list;
#   * with every build path remapped (--remap-path-prefix) to /build, so the bytes
#     do not depend on where the checkout, the target directory or the vendored
#     sources are, nor on HOME or CARGO_HOME;
#   * in a clean environment (env -i): only what is listed below reaches cargo.
#
# Usage: .ci/release-build.sh TARGET      prints the binary's path as its last line
#   TARGET: x86_64-unknown-linux-musl or aarch64-unknown-linux-musl
# Environment:
#   CARGO_TARGET_DIR  honoured (default ./target)
#   VENDOR_DIR        use these vendored sources instead of running `cargo vendor`
#                     (a reviewer without network brings them; README)
#   HOME, RUSTUP_HOME, RUSTUP_TOOLCHAIN, PATH are passed on; nothing else is.
# Needs: the Rust target, cargo-auditable, and the target's C compiler (ring compiles
# C and assembly): musl-gcc (Debian musl-tools) for x86_64, aarch64-linux-gnu-gcc
# (Debian gcc-aarch64-linux-gnu) for aarch64, which also links.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:?usage: $0 x86_64-unknown-linux-musl|aarch64-unknown-linux-musl}
checkout=$(pwd -P)
target_dir=${CARGO_TARGET_DIR:-$checkout/target}
mkdir -p "$target_dir"
target_dir=$(cd "$target_dir" && pwd -P)

case "$target" in
x86_64-unknown-linux-musl) cc_vars=(CC_x86_64_unknown_linux_musl=musl-gcc) ;;
aarch64-unknown-linux-musl)
    cc_vars=(CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc)
    ;;
*)
    echo "release-build: unknown target $target" >&2
    exit 2
    ;;
esac

# The vendored sources: the one step that reads the registry (or its local cache).
# Redone when Cargo.lock changes; a stamp keeps the lock file they were made from.
if [ -n "${VENDOR_DIR:-}" ]; then
    vendor=$(cd "$VENDOR_DIR" && pwd -P)
else
    vendor=$target_dir/vendor
    if ! cmp -s Cargo.lock "$vendor/.Cargo.lock" 2>/dev/null; then
        rm -rf "$vendor"
        cargo vendor --quiet --locked --versioned-dirs "$vendor" >/dev/null
        cp Cargo.lock "$vendor/.Cargo.lock"
    fi
fi

# An empty CARGO_HOME but for the source replacement: no registry, no credentials,
# no user configuration can reach the build.
cargo_home=$target_dir/offline-cargo-home
rm -rf "$cargo_home"
mkdir -p "$cargo_home"
cat >"$cargo_home/config.toml" <<TOML
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "$vendor"

[net]
offline = true
TOML

# rustc applies the last prefix that matches: the most specific comes last.
remap="--remap-path-prefix=$checkout=/build"
remap+=" --remap-path-prefix=$target_dir=/build/target"
remap+=" --remap-path-prefix=$vendor=/build/vendor"

pass=(PATH="$PATH" HOME="$HOME" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}")
[ -n "${RUSTUP_TOOLCHAIN:-}" ] && pass+=(RUSTUP_TOOLCHAIN="$RUSTUP_TOOLCHAIN")

env -i "${pass[@]}" "${cc_vars[@]}" \
    CARGO_HOME="$cargo_home" CARGO_TARGET_DIR="$target_dir" CARGO_TERM_COLOR=never \
    RUSTFLAGS="$remap" \
    cargo auditable build --release --offline --frozen --target "$target" >&2

echo "$target_dir/$target/release/pod-rebalancer"
