#!/usr/bin/env bash
# Prepare the wheels the GPU check needs, on a machine WITH the package index, for a GPU machine without one.
#
#   bench/gpu_wheels.sh                      # -> .whl/ (for CPython 3.12, manylinux x86_64), prints the total size
#   bench/gpu_wheels.sh --python 3.11 --dest /some/folder --no-trl
#
# Then copy the checkout (with .whl/) to the GPU machine and run bench/gpu_check.sh there: it installs these with
# `pip install --no-index --no-deps --target ...` and puts that folder first on PYTHONPATH.
#
# The GPU machine is assumed to have torch (a CUDA build), transformers, peft, accelerate and the usual scientific
# stack (numpy, pyyaml, tqdm, safetensors, tokenizers, huggingface_hub, pandas, pyarrow). What is added:
#   bitsandbytes   4-bit / 8-bit layers and paged_adamw_8bit (its manylinux wheel carries the CUDA kernels)
#   sqlglot        ft.sql (SQL parsing, validation, scoring): imported by the training loop
#   transformers, peft, accelerate   at the versions this checkout runs with (read from .venv): the code uses
#                  transformers 5 APIs (e.g. `cache=` / `.cache` in generation) that older 5.x releases lack
#   trl, datasets, dill, multiprocess   only for the ours-vs-TRL speed comparison (--no-trl leaves them out)
# Not: torch (the machine's own CUDA build), wandb (tracking is off), deepspeed (no check needs it), gguf (models are
# built from configs), flash-attn (used when the machine has it, reported as absent otherwise).
# Pure-Python packages without a wheel on the index are built into one here (pip wheel --no-deps).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$REPO/.whl"
PYVER=3.12
TRL=1
while [ $# -gt 0 ]; do
    case "$1" in
        --dest) DEST="$2"; shift 2 ;;
        --python) PYVER="$2"; shift 2 ;;
        --no-trl) TRL=0; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi

# The version this checkout runs with (its .venv), else pip resolves the newest.
pinned() {
    local v
    v="$("$PY" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$1" 2>/dev/null || true)"
    if [ -n "$v" ]; then echo "$1==$v"; else echo "$1"; fi
}

SPECS=("$(pinned bitsandbytes)" "$(pinned sqlglot)" "$(pinned transformers)" "$(pinned peft)" "$(pinned accelerate)")
if [ "$TRL" = 1 ]; then
    SPECS+=("${TRL_SPEC:-$(pinned trl)}" "$(pinned datasets)" "$(pinned dill)" "$(pinned multiprocess)")
fi

mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two would stop the install on the GPU machine
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
for spec in "${SPECS[@]}"; do
    if ! "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
            --python-version "$PYVER" --implementation cp "${PLATFORMS[@]}" -d "$DEST" "$spec"; then
        if [ "${spec%%=*}" = bitsandbytes ]; then
            echo "error: no manylinux x86_64 wheel of $spec for CPython $PYVER" >&2
            exit 1
        fi
        echo "no wheel of $spec on the index: building one from its sdist (pure Python)"
        "$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$DEST" "$spec"
    fi
done

# .whl/ is local: keep it out of git (the device tools of this workplace carry it explicitly)
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1 && [ "$DEST" = "$REPO/.whl" ]; then
    exclude="$(git -C "$REPO" rev-parse --git-path info/exclude)"
    case "$exclude" in /*) ;; *) exclude="$REPO/$exclude" ;; esac
    mkdir -p "$(dirname "$exclude")"
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
fi

echo "wheels in $DEST (for CPython $PYVER, manylinux x86_64):"
ls -l "$DEST"/*.whl | awk '{printf "  %8.1f MiB  %s\n", $5 / 1048576, $NF}'
total="$(cat "$DEST"/*.whl | wc -c)"
echo "total $(awk -v b="$total" 'BEGIN {printf "%.1f MiB", b / 1048576}') in $(ls "$DEST"/*.whl | wc -l) wheels"
