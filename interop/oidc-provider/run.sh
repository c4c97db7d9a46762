#!/usr/bin/env bash
# roger-proto against oidc-provider (npm, by panva): installs the pinned peer, starts it on an ephemeral loopback
# port, runs roger-proto/tests/interop_oidc_provider.rs against it, stops it, exits with the test's status.
#
#   interop/oidc-provider/run.sh
#
# Needs node (20 works, with oidc-provider's "unsupported runtime" warning; 22 is what it asks for), npm and cargo.
set -euo pipefail

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
  *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
interop="$(dirname "$here")"
root="$(dirname "$interop")"
started=$SECONDS

# npm ci when node_modules is missing, or older than the lock file (npm writes node_modules/.package-lock.json).
if [[ ! -f "$interop/node_modules/.package-lock.json" || "$interop/package-lock.json" -nt "$interop/node_modules/.package-lock.json" ]]; then
  echo "run.sh: npm ci in interop/" >&2
  (cd "$interop" && npm ci --no-audit --no-fund)
fi

# Build before starting a server, so that the server's lifetime is the test's alone.
(cd "$root" && cargo test -p roger-proto --all-features --test interop_oidc_provider --no-run)

provider_pid=""
workdir="$(mktemp -d)"
stop_provider() {
  if [[ -n "$provider_pid" ]] && kill -0 "$provider_pid" 2>/dev/null; then
    kill -TERM "$provider_pid" 2>/dev/null || true
    wait "$provider_pid" 2>/dev/null || true
  fi
  provider_pid=""
}
cleanup() {
  stop_provider
  rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run_once LABEL: one server, one test run; returns the test's status.
run_once() {
  local label="$1"
  local out="$workdir/$label.out" err="$workdir/$label.err"
  : >"$out"
  node "$here/provider.mjs" --port 0 >"$out" 2>"$err" &
  provider_pid=$!
  local line="" i
  for i in $(seq 1 100); do   # up to 10 s for the JSON line
    line="$(head -n 1 "$out")"
    [[ -n "$line" ]] && break
    if ! kill -0 "$provider_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [[ -z "$line" ]]; then
    echo "run.sh: provider.mjs printed no JSON line; its stderr:" >&2
    cat "$err" >&2
    stop_provider
    return 1
  fi
  echo "run.sh: [$label] $line" >&2
  local issuer
  issuer="$(node -e 'const j = JSON.parse(process.argv[1]); process.stdout.write(j.issuer)' "$line")"
  local status=0
  (cd "$root" && ROGER_INTEROP_OIDC_ISSUER="$issuer" \
      ROGER_INTEROP_APPROVE="node $here/approve.mjs" \
      cargo test -p roger-proto --all-features --test interop_oidc_provider -- --nocapture) || status=$?
  stop_provider
  if [[ $status -ne 0 ]]; then
    echo "run.sh: [$label] failed ($status); oidc-provider's stderr:" >&2
    grep -v 'NOTICE' "$err" >&2 || true
  fi
  return $status
}

status=0
run_once oidc-provider || status=$?
echo "run.sh: status $status, $((SECONDS - started)) s" >&2
exit $status
