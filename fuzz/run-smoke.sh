#!/usr/bin/env bash
# Smoke-fuzz every target briefly (DESIGN.md "Fuzz": CI runs each target briefly), on the stable toolchain.
#
#   fuzz/run-smoke.sh                  # every target, 20 s each
#   FUZZ_SECONDS=5 fuzz/run-smoke.sh   # shorter
#   fuzz/run-smoke.sh poller token     # only these targets
#
# The committed seed corpus (fuzz/corpus/<target>) is read but never written: new inputs go to a temporary
# directory that is deleted afterwards. A crash leaves its reproducer in fuzz/artifacts/<target>/ and makes the
# script exit non-zero after all targets have run; reproduce with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-…
set -euo pipefail

cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-20}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "== building ${#targets[@]} fuzz targets"
build_start=$SECONDS
cargo fuzz build
echo "== build: $((SECONDS - build_start)) s"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    if [ ! -d "$corpus" ]; then
        echo "!! no seed corpus at $corpus" >&2
        failed+=("$target (no corpus)")
        continue
    fi
    new="$scratch/$target"
    mkdir -p "$new"
    start=$SECONDS
    # The first corpus directory receives new inputs; the committed one comes second and is only read.
    if cargo fuzz run "$target" "$new" "$corpus" -- -max_total_time="$seconds" -print_final_stats=1 \
        >"$scratch/$target.log" 2>&1; then
        stats="$(grep -E '^stat::number_of_executed_units' "$scratch/$target.log" | awk '{print $2}' || true)"
        echo "== $target: ok in $((SECONDS - start)) s (${stats:-?} runs, $(ls "$new" | wc -l) new inputs)"
    else
        echo "!! $target: FAILED after $((SECONDS - start)) s" >&2
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written to' "$scratch/$target.log" >&2 || tail -n 40 "$scratch/$target.log" >&2
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "!! fuzz smoke failed: ${failed[*]}" >&2
    exit 1
fi
echo "== fuzz smoke: all ${#targets[@]} targets ok (${seconds} s each)"
