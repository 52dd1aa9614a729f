# Real Mastodon client libraries for the tests, installed once into a cached venv
# (${STARLING_TOOLS:-${XDG_CACHE_HOME:-~/.cache}/starling-tools}/clients-venv).
#
#   source scripts/lib/clients.sh
#   MASTODON_PY=$(clients_python)     # a python that imports Mastodon.py at the pinned version

MASTODON_PY_VERSION=2.3.3

clients_python() {
    local tools="${STARLING_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/starling-tools}"
    local venv="$tools/clients-venv"
    local python="$venv/bin/python"
    local want="Mastodon.py==$MASTODON_PY_VERSION"
    local have
    have=$("$python" -c 'import importlib.metadata as m; print("Mastodon.py==" + m.version("Mastodon.py"))' 2>/dev/null || true)
    if [ "$have" != "$want" ]; then
        echo "installing $want into $venv" >&2
        mkdir -p "$tools"
        [ -x "$python" ] || python3 -m venv "$venv" >&2 || { echo "clients: cannot create venv $venv" >&2; return 1; }
        "$python" -m pip install --quiet --disable-pip-version-check "$want" >&2 \
            || { echo "clients: pip install $want failed" >&2; return 1; }
    fi
    echo "$python"
}
