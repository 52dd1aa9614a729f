# Real Mastodon client libraries for the tests, installed once into a cached venv
# (${STARLING_TOOLS:-${XDG_CACHE_HOME:-~/.cache}/starling-tools}/clients-venv).
#
#   source scripts/lib/clients.sh
#   MASTODON_PY=$(clients_python)     # a python that imports Mastodon.py at the pinned version
#   MASTO_JS=$(clients_masto_js)      # masto.js's ES module entry, at the pinned version
#   SCHEMATHESIS=$(clients_schemathesis)  # the schemathesis command, at the pinned version

MASTODON_PY_VERSION=2.3.3
# 8.x needs Node 22; these machines have Node 20.
MASTO_JS_VERSION=7.12.0

# _clients_venv <name> <distribution> <version>: the cached venv <name> with that
# distribution at that version (installed if missing); prints the venv's directory.
_clients_venv() {
    local tools="${STARLING_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/starling-tools}"
    local venv="$tools/$1" want="$2==$3" have
    have=$("$venv/bin/python" -c "import importlib.metadata as m; print('$2==' + m.version('$2'))" 2>/dev/null || true)
    if [ "$have" != "$want" ]; then
        echo "installing $want into $venv" >&2
        mkdir -p "$tools"
        [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2 || { echo "clients: cannot create venv $venv" >&2; return 1; }
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$want" >&2 \
            || { echo "clients: pip install $want failed" >&2; return 1; }
    fi
    echo "$venv"
}

clients_python() {
    local venv
    venv=$(_clients_venv clients-venv Mastodon.py "$MASTODON_PY_VERSION") || return 1
    echo "$venv/bin/python"
}

clients_masto_js() {
    local tools="${STARLING_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/starling-tools}"
    local dir="$tools/clients-node"
    local entry="$dir/node_modules/masto/dist/esm/index.js"
    local have
    have=$(node -p "require('$dir/node_modules/masto/package.json').version" 2>/dev/null || true)
    if [ "$have" != "$MASTO_JS_VERSION" ]; then
        echo "installing masto@$MASTO_JS_VERSION into $dir" >&2
        mkdir -p "$dir"
        npm install --prefix "$dir" --silent --no-audit --no-fund --save-exact "masto@$MASTO_JS_VERSION" >&2 \
            || { echo "clients: npm install masto@$MASTO_JS_VERSION failed" >&2; return 1; }
    fi
    echo "$entry"
}

# schemathesis, which fuzzes the API from its OpenAPI document (tests/openapi.rs).
SCHEMATHESIS_VERSION=4.32.5

clients_schemathesis() {
    local venv
    venv=$(_clients_venv schemathesis-venv schemathesis "$SCHEMATHESIS_VERSION") || return 1
    echo "$venv/bin/schemathesis"
}

# rotel, a real OpenTelemetry collector (tests/telemetry.rs): its PyPI package ships the
# rotel-agent binary, which receives OTLP and logs the spans it got.
ROTEL_VERSION=0.0.1a15

clients_rotel() {
    local venv agent
    venv=$(_clients_venv rotel-venv rotel "$ROTEL_VERSION") || return 1
    agent=$(ls "$venv"/lib/python3*/site-packages/rotel/rotel-agent 2>/dev/null | head -1)
    [ -x "$agent" ] || { echo "clients: no rotel-agent binary in $venv" >&2; return 1; }
    echo "$agent"
}
