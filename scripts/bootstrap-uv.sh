#!/bin/sh
# Makes sure uv is available, without installing anything into the system Python (PEP 668:
# Debian and Ubuntu refuse `pip install` there). Prints the path of the uv to use on stdout;
# what it does goes to stderr.
#
#   1. uv on PATH (or $UV when it names an executable): used as it is.
#   2. .tools/uv/bin/uv from an earlier run: used again.
#   3. When the system Python has pip: the uv wheel is fetched from the package index (pip
#      download, which installs nothing, so PEP 668 does not refuse it) and its binary unpacked
#      into .tools/uv/bin (the quickest: about 3 s).
#   4. Else a project-local virtualenv, .tools/uv (python3 -m venv; its own pip installs uv).
#      Needs venv and ensurepip (on Debian/Ubuntu: the python3-venv package).
#   5. Else pipx, when present, with its home under .tools/pipx.
# UV_BOOTSTRAP=wheel|venv|pipx tries only that one.
#
# uv itself never downloads a Python: the Makefile sets UV_PYTHON_DOWNLOADS=never, so it uses
# the python3 found on PATH (3.11 or newer).
set -eu
UV_SPEC="${UV_SPEC:-uv>=0.13,<0.14}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="$ROOT/.tools"
LOCAL_UV="$TOOLS/uv/bin/uv"
PYTHON="${PYTHON:-python3}"
ONLY="${UV_BOOTSTRAP:-}"

say() { echo "setup: $*" >&2; }

if [ -n "${UV:-}" ] && [ "${UV}" != "uv" ] && [ -x "${UV}" ]; then
  echo "$UV"; exit 0
fi
if command -v uv >/dev/null 2>&1; then
  echo "$(command -v uv)"; exit 0
fi
if [ -x "$LOCAL_UV" ]; then
  echo "$LOCAL_UV"; exit 0
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  say "no uv and no $PYTHON on PATH: install Python 3.11+ (or uv: https://docs.astral.sh/uv/) and run again"
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  say "$("$PYTHON" --version 2>&1) is too old: Agentry needs Python 3.11 or newer on PATH as $PYTHON"
  exit 1
fi

say "uv is not on PATH: installing $UV_SPEC into $TOOLS/uv (nothing is installed into $("$PYTHON" -c 'import sys; print(sys.executable)'))"
mkdir -p "$TOOLS"
rm -rf "$TOOLS/uv"

if { [ "$ONLY" = "" ] || [ "$ONLY" = wheel ]; } && "$PYTHON" -m pip --version >/dev/null 2>&1; then
  say "fetching the uv wheel with pip download (it installs nothing) and unpacking its binary"
  WHEELS="$TOOLS/wheels"
  rm -rf "$WHEELS" && mkdir -p "$WHEELS" "$TOOLS/uv/bin"
  if "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
       -d "$WHEELS" "$UV_SPEC" >&2; then
    "$PYTHON" - "$WHEELS" "$LOCAL_UV" <<'EOF'
import os, sys, zipfile
from pathlib import Path
wheel = next(Path(sys.argv[1]).glob("uv-*.whl"))
target = Path(sys.argv[2])
with zipfile.ZipFile(wheel) as archive:
    name = next(n for n in archive.namelist() if n.endswith(".data/scripts/uv"))
    target.write_bytes(archive.read(name))
os.chmod(target, 0o755)
EOF
    rm -rf "$WHEELS"
    if [ -x "$LOCAL_UV" ] && "$LOCAL_UV" --version >/dev/null 2>&1; then
      say "uv $("$LOCAL_UV" --version | cut -d' ' -f2) is at .tools/uv/bin/uv"
      echo "$LOCAL_UV"; exit 0
    fi
  fi
  say "could not fetch the uv wheel"
  rm -rf "$TOOLS/uv"
fi

if [ "$ONLY" = "" ] || [ "$ONLY" = venv ]; then
  if "$PYTHON" -m venv "$TOOLS/uv" >/dev/null 2>&1 && [ -x "$TOOLS/uv/bin/pip" ]; then
    say "created a virtualenv at .tools/uv; installing uv with its pip"
    if "$TOOLS/uv/bin/pip" install --quiet --disable-pip-version-check "$UV_SPEC" >&2 && [ -x "$LOCAL_UV" ]; then
      say "uv $("$LOCAL_UV" --version | cut -d' ' -f2) is at .tools/uv/bin/uv"
      echo "$LOCAL_UV"; exit 0
    fi
    say "pip in the virtualenv could not install uv"
  else
    say "python3 -m venv is not usable here (on Debian/Ubuntu: apt install python3-venv)"
  fi
  rm -rf "$TOOLS/uv"
fi

if { [ "$ONLY" = "" ] || [ "$ONLY" = pipx ]; } && command -v pipx >/dev/null 2>&1; then
  say "installing uv with pipx into .tools/pipx"
  mkdir -p "$TOOLS/uv/bin"
  if PIPX_HOME="$TOOLS/pipx" PIPX_BIN_DIR="$TOOLS/uv/bin" pipx install --quiet "$UV_SPEC" >&2 && [ -x "$LOCAL_UV" ]; then
    echo "$LOCAL_UV"; exit 0
  fi
fi

say "could not install uv: install it yourself (https://docs.astral.sh/uv/getting-started/installation/) and run again"
exit 1
