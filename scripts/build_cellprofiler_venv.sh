#!/usr/bin/env bash
# Build a Python 3.9 venv with headless CellProfiler 4.2.8.1 + onnxruntime 1.19.2.
#
# Usage: scripts/build_cellprofiler_venv.sh            (venv at ${CP_VENV:-.cpvenv})
#
# Follows docs/cellprofiler-headless.md: pyenv's Python 3.9.18, a JDK for
# javabridge, numpy/scipy/setuptools constraints, javabridge built without build
# isolation, cellprofiler itself installed with --no-deps (no wxPython: headless).
# Idempotent: does nothing when "$VENV/.s2l-cp-ok" exists.
set -euo pipefail

VENV="${CP_VENV:-.cpvenv}"
STAMP="$VENV/.s2l-cp-ok"

if [ -f "$STAMP" ]; then
    echo "CellProfiler venv: present ($VENV)"
    exit 0
fi

PY39="${CP_PYTHON:-}"
if [ -z "$PY39" ]; then
    if command -v pyenv >/dev/null; then
        PY39="$(pyenv root)/versions/3.9.18/bin/python"
    else
        PY39="$(command -v python3.9 || true)"
    fi
fi
if [ -z "$PY39" ] || [ ! -x "$PY39" ]; then
    echo "error: Python 3.9 not found; install it (pyenv install 3.9.18) or set CP_PYTHON" >&2
    exit 1
fi

if [ -z "${JAVA_HOME:-}" ]; then
    for d in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64; do
        if [ -x "$d/bin/javac" ]; then JAVA_HOME="$d"; break; fi
    done
fi
if [ -z "${JAVA_HOME:-}" ] || [ ! -x "$JAVA_HOME/bin/javac" ]; then
    echo "error: no JDK found; apt-get install openjdk-17-jdk-headless or set JAVA_HOME" >&2
    exit 1
fi
export JAVA_HOME

echo "building CellProfiler 4.2.8.1 venv at $VENV (about 3 minutes)"
rm -rf "$VENV"
"$PY39" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
printf 'numpy==1.23.5\nscipy==1.9.0\nsetuptools<81\ncython<3\ntifffile<2022.4.22\n' \
    > "$VENV/constraints.txt"
export PIP_CONSTRAINT="$VENV/constraints.txt"

$PIP install -q -U pip wheel "setuptools<81"
$PIP install -q numpy cython
$PIP install -q --no-build-isolation python-javabridge==4.0.5
$PIP install -q cellprofiler-core==4.2.8.1 "inflect<7,>=2.1" "Jinja2>=2.11.2" "joblib>=0.13" \
    "mahotas>=1.4" "sentry-sdk==0.18.0" "requests>=2.22" "scikit-learn<1,>=0.20" six \
    "imageio>=2.5" onnxruntime==1.19.2
$PIP install -q --no-deps cellprofiler==4.2.8.1

"$VENV/bin/python" -W ignore -c "import cellprofiler_core, cellprofiler, onnxruntime"
touch "$STAMP"
echo "CellProfiler venv: ready ($VENV)"
