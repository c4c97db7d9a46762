#!/usr/bin/env bash
# Runs two independent OAuth client libraries, unmodified and pinned, against a fresh `roger-sim server`:
# openid-client (npm, interop/package.json + package-lock.json) and Authlib (PyPI, interop/requirements.txt).
# Each prints one PASS/FAIL line per flow (discovery, device-grant, refresh-rotation, authorization-code-pkce,
# revocation); this script exits non-zero if any flow failed.
#
#   bash interop/clients/run.sh [--plain-http]
#
# Builds nothing: the server binary is $ROGER_SIM, or target/debug/roger-sim
# (`cargo build -p roger-sim --bin roger-sim`). Installs interop/node_modules (`npm ci`) and the venv
# interop/.venv (pip, from requirements.txt) when they are missing or stale. The server runs on an ephemeral
# loopback port over TLS with a temporary --tls-dir (`--plain-http`: plain HTTP, loopback tests only) and is
# stopped on exit.
set -euo pipefail

started=$(date +%s%N)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
interop=$(dirname "$here")
root=$(dirname "$interop")
sim=${ROGER_SIM:-$root/target/debug/roger-sim}

plain=false
case "${1:-}" in
  "") ;;
  --plain-http) plain=true ;;
  *) echo "usage: $0 [--plain-http]" >&2; exit 2 ;;
esac

die() { echo "run.sh: $*" >&2; exit 2; }
[[ -x $sim ]] || die "no server binary at $sim: build it with 'cargo build -p roger-sim --bin roger-sim' or set ROGER_SIM"
for tool in node npm python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

# --- the two libraries, installed from their registries at the pinned versions ---------------------------------
if [[ ! -f $interop/node_modules/.package-lock.json || $interop/package-lock.json -nt $interop/node_modules/.package-lock.json ]]; then
  echo "run.sh: npm ci (interop/node_modules)" >&2
  (cd "$interop" && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci failed in $interop"
fi
venv=$interop/.venv
if ! cmp -s "$interop/requirements.txt" "$venv/.installed-requirements.txt" 2>/dev/null; then
  echo "run.sh: pip install -r interop/requirements.txt (interop/.venv)" >&2
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install --disable-pip-version-check --quiet --require-virtualenv -r "$interop/requirements.txt" >&2 \
    || die "pip install failed"
  cp "$interop/requirements.txt" "$venv/.installed-requirements.txt"
fi

# --- the server ---------------------------------------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/roger-interop.XXXXXX")
server_pid=
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

args=(server --listen 127.0.0.1:0 --tls-dir "$tmp/tls")
$plain && args+=(--plain-http)
"$sim" "${args[@]}" >"$tmp/contract.json" 2>"$tmp/server.log" &
server_pid=$!

# The contract: exactly one JSON line on stdout once the server accepts connections.
for _ in $(seq 1 300); do
  [[ $(wc -l <"$tmp/contract.json") -ge 1 ]] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "run.sh: roger-sim server exited before printing its JSON line:" >&2
    tail -n 20 "$tmp/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
[[ $(wc -l <"$tmp/contract.json") -ge 1 ]] || { echo "run.sh: no JSON line from roger-sim server within 30 s" >&2; exit 1; }
read -r api ca < <(python3 -c 'import json,sys; c=json.loads(sys.stdin.readline()); print(c["api"], c["ca"] or "-")' <"$tmp/contract.json") \
  || die "cannot read the server's JSON line"
if $plain; then
  [[ $api == http://* && $ca == - ]] || die "expected a plain-http server, got $api"
  ca=
else
  [[ $api == https://* && -f $ca ]] || die "expected a TLS server and its CA file, got $api ($ca)"
fi
echo "run.sh: roger-sim server at $api (pid $server_pid, $($plain && echo 'plain HTTP' || echo "TLS, CA $ca"))"

# --- the clients, one after the other (the server's /sim/faults plan is global: runs must not overlap) ------------
status=0
echo "== openid-client $(node -p 'require(process.argv[1]).version' "$interop/node_modules/openid-client/package.json") (node $(node --version))"
if $plain; then
  node "$here/openid_client.mjs" "$api" || status=1
else
  NODE_EXTRA_CA_CERTS=$ca node "$here/openid_client.mjs" "$api" || status=1
fi
echo "== Authlib $("$venv/bin/python" -c 'import authlib; print(authlib.__version__)') (requests $("$venv/bin/python" -c 'import requests; print(requests.__version__)'), $("$venv/bin/python" --version))"
if $plain; then
  "$venv/bin/python" "$here/authlib_client.py" "$api" || status=1
else
  "$venv/bin/python" "$here/authlib_client.py" "$api" "$ca" || status=1
fi

if [[ $status -ne 0 && -s $tmp/server.log ]]; then
  echo "run.sh: last lines of the server's log:" >&2
  tail -n 20 "$tmp/server.log" >&2
fi
elapsed=$(( ($(date +%s%N) - started) / 1000000 ))
printf 'run.sh: %s in %d.%03d s\n' "$([[ $status -eq 0 ]] && echo 'all flows passed' || echo 'FAILED')" $((elapsed / 1000)) $((elapsed % 1000))
exit "$status"
