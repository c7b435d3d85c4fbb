#!/usr/bin/env bash
# redisrepl's two commands, each installing what it needs first:
#   ./dev.sh demo    the sandbox (local Redis, remote Redis + Webdis + nginx mTLS) and the daemon, replicating
#   ./dev.sh test    lint (ruff check, ruff format --check), types (mypy), then the whole
#                    test suite (unit and end-to-end); arguments go to pytest
#   ./dev.sh check   lint and types only
#   ./dev.sh bench   the benchmark (prints figures)
# System packages come from apt-get (redis-server, webdis, nginx); Python
# packages go into a virtual environment (.venv, or $REDISREPL_VENV).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${REDISREPL_VENV:-.venv}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_system() {
    local need=()
    command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
    command -v webdis >/dev/null 2>&1 || need+=(webdis)
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
    command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)   # checks contrib/redisrepl.service
    if [ ${#need[@]} -gt 0 ]; then
        echo "dev.sh: installing ${need[*]} with apt-get" >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
    fi
}

# promtool checks contrib/redisrepl.rules.yml and the dashboard's queries (and
# ./dev.sh dashboard runs prometheus): unpacked from Debian's prometheus package into .cache/promtool
# without installing the package (no service started, no user made)
install_promtool() {
    command -v promtool >/dev/null 2>&1 && return
    local dir=.cache/promtool
    if [ ! -x "$dir/usr/bin/promtool" ]; then
        echo "dev.sh: fetching promtool (Debian's prometheus package, unpacked into $dir)" >&2
        mkdir -p "$dir"
        if ! (cd "$dir" && apt-get download prometheus >/dev/null 2>&1); then
            as_root apt-get update -qq
            (cd "$dir" && apt-get download prometheus >/dev/null 2>&1)
        fi
        dpkg-deb -x "$dir"/prometheus_*.deb "$dir"
        rm -f "$dir"/prometheus_*.deb
    fi
}

install_python() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "dev.sh: creating the virtual environment $VENV" >&2
        python3 -m venv "$VENV"
    fi
    # reinstall only when the project changed (no package index needed otherwise)
    local stamp="$VENV/.redisrepl-installed" want
    want=$(cat pyproject.toml redisrepl/*.py redisrepl/sandbox/*.py redisrepl/lua/*.lua twisted/plugins/*.py | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip >&2
        "$VENV/bin/python" -m pip install -q ".[test]" >&2
        echo "$want" > "$stamp"
    fi
}

lint() {
    echo "dev.sh: ruff check, ruff format --check, mypy" >&2
    "$VENV/bin/ruff" check redisrepl tests bench twisted
    "$VENV/bin/ruff" format --check redisrepl tests bench twisted
    "$VENV/bin/mypy"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    demo)
        install_system; install_python
        exec "$VENV/bin/python" -m redisrepl.sandbox demo "$@" ;;
    test)
        install_system; install_python; install_promtool
        lint
        exec "$VENV/bin/python" -m pytest "$@" ;;
    check)
        install_python
        lint ;;
    bench)
        install_system; install_python
        exec "$VENV/bin/python" bench/bench.py "$@" ;;
    dashboard)
        install_system; install_python; install_promtool
        exec "$VENV/bin/python" bench/dashboard.py "$@" ;;
    *)
        echo "usage: ./dev.sh demo|test|check|bench|dashboard [args]" >&2
        exit 2 ;;
esac
