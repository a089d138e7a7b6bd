#!/usr/bin/env bash
# Installs moto's server (a local stand-in for the AWS APIs) for the e2e harness, once
# per machine.
#
# moto is pinned and installed from PyPI into a Python venv outside the repository:
#   ${FERROLB_CACHE_DIR:-~/.cache/ferrolb}/moto-<version>/bin/moto_server
# A second run finds it and does nothing. Set FERROLB_MOTO_SERVER to the path of an
# existing moto_server executable to skip the install altogether; FERROLB_PYTHON picks
# the interpreter for the venv (default python3, which must be 3.9 or newer).
#
# A venv cannot be moved (its scripts name their interpreter by absolute path), so the
# venv is built in a uniquely named directory beside the final path, and the final path
# is a symlink to it that is swapped in by rename once the install has finished: an
# interrupted install leaves only a directory that no later run looks at.
#
# Prints the path of moto_server on its last line; everything else goes to stderr.
set -euo pipefail

MOTO_VERSION=5.2.5
# moto parses requests with botocore's service models and serves them with Flask and
# Werkzeug; pin those too, at the versions this was tested with, so that a new upstream
# release cannot change what the tests see.
CONSTRAINTS="boto3==1.44.5
botocore==1.44.5
Flask==3.1.3
flask-cors==6.0.5
Werkzeug==3.1.9"

if [[ -n "${FERROLB_MOTO_SERVER:-}" ]]; then
  [[ -f "$FERROLB_MOTO_SERVER" && -x "$FERROLB_MOTO_SERVER" ]] || {
    echo "FERROLB_MOTO_SERVER=$FERROLB_MOTO_SERVER is not an executable file" >&2
    exit 1
  }
  echo "$FERROLB_MOTO_SERVER"
  exit 0
fi

cache="${FERROLB_CACHE_DIR:-$HOME/.cache/ferrolb}"
out="$cache/moto-$MOTO_VERSION"
builds="$cache/moto-$MOTO_VERSION.builds"
mkdir -p "$builds"

# A finished install: the link resolves, the interpreter behind it still runs (pyenv
# and distribution upgrades can remove it) and moto_server is there.
ready() {
  [[ -x "$out/bin/moto_server" ]] && "$out/bin/python" -c '' 2>/dev/null
}

if ! ready; then
  # Concurrent callers (test binaries run in parallel) wait for one install.
  exec 9>"$builds/lock"
  flock 9
  if ! ready; then
    python=${FERROLB_PYTHON:-python3}
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || {
      echo "moto $MOTO_VERSION needs Python 3.9 or newer; $python is $("$python" --version 2>&1)" >&2
      exit 1
    }
    echo "installing moto[server]==$MOTO_VERSION into $out (once per machine)" >&2
    # Earlier interrupted builds: nobody uses them (the lock is ours).
    current=$(readlink -f "$out" 2>/dev/null || true)
    for old in "$builds"/venv-*; do
      if [[ -d "$old" && "$(readlink -f "$old")" != "$current" ]]; then rm -rf "$old"; fi
    done
    build=$(mktemp -d "$builds/venv-XXXXXXXX")
    chmod 755 "$build"
    "$python" -m venv "$build"
    printf '%s\n' "$CONSTRAINTS" >"$build/constraints.txt"
    "$build/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
      --constraint "$build/constraints.txt" "moto[server]==$MOTO_VERSION" >&2
    "$build/bin/moto_server" --help >/dev/null
    # Swap the link in by rename; a stale directory in its place (not a link) goes first.
    [[ -L "$out" || ! -e "$out" ]] || rm -rf "$out"
    ln -sfn "$build" "$out.tmp"
    mv -T "$out.tmp" "$out"
  fi
  exec 9>&-
fi
echo "$out/bin/moto_server"
