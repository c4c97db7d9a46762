#!/usr/bin/env bash
# roger against oidc-provider (npm, by panva), an authorization server nobody here wrote: installs the pinned peer,
# starts it on an ephemeral loopback port, and runs against it
#   1. roger-proto/tests/interop_oidc_provider.rs: the DevicePoller, refresh with rotation, reuse and revocation
#      through roger-proto's driver feature;
#   2. the conformance kit in server mode (oauth profile, approvals on oidc-provider's own pages through
#      approve.mjs), whose verdicts must equal the committed table expected-verdicts.toml;
# then stops it and exits non-zero if either failed.
#
#   interop/oidc-provider/run.sh [--reports DIR]      # DIR: the kit's JSON and HTML reports
#
# The kit is $ROGER_SIM, or target/debug/roger-sim (`cargo build -p roger-sim --bin roger-sim`). Needs node (20
# works, with oidc-provider's "unsupported runtime" warning; 22 is what it asks for), npm and cargo.
set -euo pipefail

reports=""
case "${1:-}" in
  "") ;;
  --reports) reports="${2:?--reports needs a directory}" ;;
  -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
  *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
interop="$(dirname "$here")"
root="$(dirname "$interop")"
sim="${ROGER_SIM:-$root/target/debug/roger-sim}"
started=$SECONDS
[[ -x "$sim" ]] || { echo "run.sh: no roger-sim at $sim: cargo build -p roger-sim --bin roger-sim, or set ROGER_SIM" >&2; exit 2; }

# npm ci when node_modules is missing, or older than the lock file (npm writes node_modules/.package-lock.json).
if [[ ! -f "$interop/node_modules/.package-lock.json" || "$interop/package-lock.json" -nt "$interop/node_modules/.package-lock.json" ]]; then
  echo "run.sh: npm ci in interop/" >&2
  (cd "$interop" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

# Build before starting the server, so that its lifetime is the runs' alone.
(cd "$root" && cargo test --workspace --all-features --test interop_oidc_provider --no-run)

provider_pid=""
workdir="$(mktemp -d)"
cleanup() {
  if [[ -n "$provider_pid" ]] && kill -0 "$provider_pid" 2>/dev/null; then
    kill -TERM "$provider_pid" 2>/dev/null || true
    wait "$provider_pid" 2>/dev/null || true
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

node "$here/provider.mjs" --port 0 >"$workdir/provider.out" 2>"$workdir/provider.err" &
provider_pid=$!
line=""
for _ in $(seq 1 100); do   # up to 10 s for the JSON line
  line="$(head -n 1 "$workdir/provider.out")"
  [[ -n "$line" ]] && break
  kill -0 "$provider_pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$line" ]]; then
  echo "run.sh: provider.mjs printed no JSON line; its stderr:" >&2
  cat "$workdir/provider.err" >&2
  exit 1
fi
echo "run.sh: $line" >&2
issuer="$(node -e 'process.stdout.write(JSON.parse(process.argv[1]).issuer)' "$line")"

status=0
step=$SECONDS
echo "run.sh: 1. roger-proto's device grant, rotation and revocation against oidc-provider" >&2
(cd "$root" && ROGER_INTEROP_OIDC_ISSUER="$issuer" ROGER_INTEROP_APPROVE="node $here/approve.mjs" \
    cargo test --workspace --all-features --test interop_oidc_provider -- --nocapture) || status=1
echo "run.sh: 1. done in $((SECONDS - step)) s (status $status)" >&2

step=$SECONDS
echo "run.sh: 2. the conformance kit (server mode, oauth profile) against oidc-provider" >&2
report_args=()
if [[ -n "$reports" ]]; then
  mkdir -p "$reports"
  report_args=(--json "$reports/conform-oidc-provider.json" --html "$reports/conform-oidc-provider.html")
fi
# The user's step, as the kit asks for it (docs/conformance.md §4.1): ROGER_USER_CODE, ROGER_APPROVE=approve|deny.
approve="node $(printf %q "$here/approve.mjs") --issuer $(printf %q "$issuer") --user-code \"\$ROGER_USER_CODE\""
approve+=' $( [ "$ROGER_APPROVE" = deny ] && echo --deny )'
kit=0
(cd "$root" && "$sim" conform server --issuer "$issuer" --allow-loopback-http \
    --fixture "$here/conform-client.toml" --approve-command "$approve" \
    --expected-verdicts "$here/expected-verdicts.toml" --seed 15 --quiet "${report_args[@]}") || kit=$?
[[ $kit -eq 0 ]] || status=1
echo "run.sh: 2. done in $((SECONDS - step)) s (exit $kit)" >&2

if [[ $status -ne 0 ]]; then
  echo "run.sh: failed; oidc-provider's stderr:" >&2
  grep -v 'NOTICE' "$workdir/provider.err" >&2 || true
fi
echo "run.sh: status $status, $((SECONDS - started)) s" >&2
exit $status
