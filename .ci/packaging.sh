#!/usr/bin/env bash
# Packaging checks (issue 4): the static musl binary, the scratch image, the
# kustomize manifests and the alert rules, all built and checked for real.
#
#   bash .ci/packaging.sh                   run every check (what CI runs)
#   bash .ci/packaging.sh regenerate-rules  rewrite the PrometheusRule and VMRule
#                                           from manifests/alerts/pod-rebalancer.rules.yml
#
# Needs root (apt-get, chroot, buildah). Installs what is missing; safe to run
# again. CARGO_TARGET_DIR is honoured. The binary is built the one way releases are
# (.ci/release-build.sh: vendored, offline, reproducible, cargo-auditable); after
# .ci/supply-chain.sh that build is already there and this one is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh

readonly TARGET=x86_64-unknown-linux-musl
readonly RULES=manifests/alerts/pod-rebalancer.rules.yml
readonly RULES_TESTS=manifests/alerts/pod-rebalancer.rules.test.yml
readonly PROMETHEUS_RULE=manifests/components/prometheusrule/prometheusrule.yaml
readonly VM_RULE=manifests/components/vmrule/vmrule.yaml

started=$(date +%s)
step() { printf '\n==> packaging: %s (%ss)\n' "$*" "$(($(date +%s) - started))"; }
fail() {
    printf 'packaging: FAILED: %s\n' "$*" >&2
    exit 1
}

# One custom resource holding the rule groups of $RULES, indented under spec.
# The source's leading comments stay behind: they describe the source file.
rule_resource() {
    local api_version=$1 kind=$2
    printf '# Generated from %s by `.ci/packaging.sh regenerate-rules`:\n' "$RULES"
    printf '# edit that file and regenerate; CI fails when this one differs.\n'
    printf 'apiVersion: %s\nkind: %s\nmetadata:\n  name: pod-rebalancer\nspec:\n' "$api_version" "$kind"
    awk '/^groups:/ { body = 1 } body { print (length($0) ? "  " $0 : "") }' "$RULES"
}
prometheus_rule() { rule_resource monitoring.coreos.com/v1 PrometheusRule; }
vm_rule() { rule_resource operator.victoriametrics.com/v1beta1 VMRule; }

case "${1:-check}" in
check) ;;
regenerate-rules)
    prometheus_rule >"$PROMETHEUS_RULE"
    vm_rule >"$VM_RULE"
    echo "wrote $PROMETHEUS_RULE and $VM_RULE"
    exit 0
    ;;
*)
    echo "usage: $0 [check|regenerate-rules]" >&2
    exit 2
    ;;
esac

[ "$(id -u)" -eq 0 ] || fail "run as root: it installs packages, uses chroot and builds an image with buildah"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "tools"
# command=the Debian package that provides it
install_missing promtool=prometheus vmalert=victoria-metrics buildah=buildah musl-gcc=musl-tools file=file
# kubectl (with its built-in kustomize) is not a Debian package; the machine
# image ships it. Debian's kubernetes-client is too old for components.
command -v kubectl >/dev/null 2>&1 || fail "kubectl not found: install kubectl >= 1.27 (kustomize v5)"
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
cargo install --list | grep -q '^cargo-auditable v' || cargo install --quiet --locked cargo-auditable@0.7.7
promtool --version 2>&1 | head -n 1
buildah --version
kubectl version --client 2>/dev/null | head -n 2

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || fail "could not read the package version from Cargo.toml"
image=localhost/pod-rebalancer:$version

step "static musl release binary (.ci/release-build.sh)"
binary=$(bash .ci/release-build.sh "$TARGET" | tail -n 1)
file_says=$(file -b "$binary")
echo "file: $file_says"
case "$file_says" in
*"statically linked"* | *"static-pie linked"*) ;;
*) fail "file does not call $binary static" ;;
esac
ldd_says=$(ldd "$binary" 2>&1 || true)
echo "ldd: $ldd_says"
case "$ldd_says" in
*"statically linked"* | *"not a dynamic executable"*) ;;
*) fail "ldd lists shared libraries for $binary" ;;
esac
binary_bytes=$(stat -c %s "$binary")
echo "binary: $binary_bytes bytes ($((binary_bytes / 1024)) KiB)"

step "empty root: only the binary and two saved responses, as uid 65532"
root=$work/root
mkdir -p "$root"
chmod 0755 "$root"
install -m 0555 "$binary" "$root/pod-rebalancer"
install -m 0444 fixtures/k8s/podlist_kube-system_kind-v1.36.json "$root/pods.json"
# A VictoriaMetrics answer for the two coredns pods of that recorded pod list.
cat >"$root/cpu.json" <<'JSON'
{"status":"success","data":{"resultType":"vector","result":[
 {"metric":{"pod":"coredns-589f44dc88-4fpns"},"value":[1781503200,"0.012"]},
 {"metric":{"pod":"coredns-589f44dc88-lxdzt"},"value":[1781503200,"0.004"]}]}}
JSON
chmod 0444 "$root/cpu.json"
echo "root holds: $(cd "$root" && echo *)"
# Runs the binary inside the root as the image's user, with only the given
# variables in its environment: in_root [NAME=VALUE...] -- ARGS...
in_root() {
    local vars=()
    while [ "$1" != -- ]; do
        vars+=("$1")
        shift
    done
    shift
    env -i "${vars[@]}" "$(command -v chroot)" --userspec=65532:65532 "$root" /pod-rebalancer "$@"
}
got=$(in_root -- --version) || fail "--version in the empty root exited $?"
echo "$got"
[ "$got" = "pod-rebalancer $version" ] || fail "--version in the empty root printed '$got'"
plan=$(in_root DEPLOYMENT_NAME=coredns KUBE_NAMESPACE=kube-system MIN_PODS_REQUIRED=1 -- \
    plan --pods /pods.json --cpu /cpu.json --now 2026-06-15T06:00:00Z) ||
    fail "plan in the empty root exited $?"
echo "$plan"
grep -q '^decision: would evict' <<<"$plan" || fail "plan in the empty root printed no decision"

step "scratch image (buildah, stage 'prebuilt' with the binary above)"
context=$work/context
mkdir -p "$context/amd64"
cp "$binary" "$context/amd64/pod-rebalancer"
buildah --storage-driver vfs rmi "$image" >/dev/null 2>&1 || true
grep -qx "ARG VERSION=$version" Containerfile ||
    fail "Containerfile's ARG VERSION is not $version, the version in Cargo.toml"
buildah --storage-driver vfs bud --quiet --timestamp 0 --identity-label=false --platform linux/amd64 \
    --target prebuilt -f Containerfile -t "$image" "$context"
buildah --storage-driver vfs images "$image"
user=$(buildah --storage-driver vfs inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
entrypoint=$(buildah --storage-driver vfs inspect --type image --format '{{.OCIv1.Config.Entrypoint}}' "$image")
labels=$(buildah --storage-driver vfs inspect --type image --format '{{.OCIv1.Config.Labels}}' "$image")
echo "user: $user; entrypoint: $entrypoint"
echo "labels: $labels"
[ "$user" = "65532:65532" ] || fail "image user is '$user'"
[ "$entrypoint" = "[/pod-rebalancer]" ] || fail "image entrypoint is '$entrypoint'"
for label in "org.opencontainers.image.source:https://github.com/pod-rebalancer/pod-rebalancer" \
    "org.opencontainers.image.version:$version" "org.opencontainers.image.licenses:Apache-2.0"; do
    grep -qF "$label" <<<"$labels" || fail "image label $label missing"
done
container=$(buildah --storage-driver vfs from "$image")
got=$(buildah --storage-driver vfs run --isolation chroot "$container" -- /pod-rebalancer --version) ||
    got="exit $?"
buildah --storage-driver vfs rm "$container" >/dev/null
[ "$got" = "pod-rebalancer $version" ] || fail "the image's binary printed '$got'"
echo "in the image: $got"
image_size=$(buildah --storage-driver vfs images --format '{{.Size}}' "$image")
echo "image size: $image_size"

step "alert rules"
promtool check rules "$RULES"
promtool test rules "$RULES_TESTS"
# vmalert parses MetricsQL and the annotation templates (query, humanizeTimestamp…)
# its own way: the rules must load there too.
vmalert -dryRun -rule="$RULES" -loggerLevel=ERROR || fail "vmalert does not load $RULES"
echo "vmalert -dryRun loads $RULES"
diff -u "$PROMETHEUS_RULE" <(prometheus_rule) ||
    fail "$PROMETHEUS_RULE differs from $RULES: run .ci/packaging.sh regenerate-rules"
diff -u "$VM_RULE" <(vm_rule) ||
    fail "$VM_RULE differs from $RULES: run .ci/packaging.sh regenerate-rules"
echo "$PROMETHEUS_RULE and $VM_RULE match $RULES"
# That the rules name only metrics of SPEC §8: cargo test --test it dashboard.
echo "(the metrics the rules use are checked against SPEC §8 by cargo test --test it dashboard)"

step "metrics of a real run (promtool check metrics)"
# A run against a closed port fails (exit 1) after writing the metrics of a
# failed run; the second run continues the first one's counters.
metrics=$work/metrics.prom
sa_dir=$work/serviceaccount
mkdir -p "$sa_dir"
for run in 1 2; do
    code=0
    env -i KUBE_API_URL=http://127.0.0.1:9 DEPLOYMENT_NAME=demo KUBE_SERVICE_ACCOUNT_DIR="$sa_dir" \
        METRICS_FILE="$metrics" LOG_LEVEL=error "$binary" || code=$?
    [ "$code" -eq 1 ] || fail "run $run against a closed port exited $code, expected 1"
done
echo "$(grep -c '^# TYPE' "$metrics") metric families, $(grep -vc '^#' "$metrics") samples"
promtool check metrics <"$metrics"
grep -qx 'rebalancer_executions_total{namespace="posthog",deployment="demo",status="error"} 2' "$metrics" ||
    fail "the second run did not continue the first run's counters"
echo "metrics file passes promtool check metrics"

step "manifests (kubectl kustomize)"
# Every component on top of the base, as a user's overlay would use them
# (kustomize takes only relative paths to a base).
overlay=$work/overlay
mkdir -p "$overlay"
manifests=$(realpath --relative-to="$overlay" manifests)
cat >"$overlay/kustomization.yaml" <<YAML
resources: [$manifests]
components:
  - $manifests/components/delete-mode
  - $manifests/components/fleet
  - $manifests/components/prometheusrule
  - $manifests/components/vmrule
YAML
kubectl kustomize "$overlay" >"$work/overlay.yaml"
echo "with every component: $(grep '^kind:' "$work/overlay.yaml" | cut -d' ' -f2 | paste -sd' ')"
echo "(RBAC verbs, CronJob policy and security context: cargo test --test it manifests)"

step "summary"
echo "binary: $binary_bytes bytes, static ($TARGET)"
echo "image:  $image, $image_size"
echo "time:   $(($(date +%s) - started)) s"
echo "packaging: all checks passed"
