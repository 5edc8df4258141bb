#!/usr/bin/env bash
# GT4Py integration tests: GT4Py needs Python >= 3.12 and Boost headers for its C++ backend,
# so they run in their own venv (kept in .ci/.venv-gt4py and reused while its inputs are unchanged).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

GT4PY_REQ='gt4py[testing]==1.2.3'
VENV="${STEPCACHE_GT4PY_VENV:-.ci/.venv-gt4py}"

find_python312() {
    local version
    if command -v pyenv >/dev/null 2>&1; then
        version=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12\.[0-9]+$' | sort -V | tail -n 1 || true)
        if [ -n "$version" ] && PYENV_VERSION="$version" pyenv which python3.12 2>/dev/null; then
            return 0
        fi
    fi
    if command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import venv' 2>/dev/null; then
        command -v python3.12
        return 0
    fi
    return 1
}

if [ ! -f /usr/include/boost/version.hpp ]; then
    echo "== installing libboost-dev (GT4Py's gtfn backend includes Boost headers)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libboost-dev >/dev/null
fi

# The venv is rebuilt when the project's dependencies or the GT4Py pin change.
stamp="$GT4PY_REQ $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]; then
    python312=$(find_python312) || {
        echo "gt4py.sh: no Python 3.12 found (pyenv or python3.12 on PATH); GT4Py needs it" >&2
        exit 1
    }
    echo "== creating $VENV with $python312"
    rm -rf "$VENV"
    "$python312" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[test]' "$GT4PY_REQ"
    echo "$stamp" >"$VENV/.stamp"
else
    # A reused venv may have been made from another checkout: point it at this one.
    "$VENV/bin/python" -m pip install -q --no-deps -e .
fi

echo "== pytest tests/integrations (Python 3.12, $GT4PY_REQ)"
"$VENV/bin/python" -m pytest tests/integrations -p no:cacheprovider
