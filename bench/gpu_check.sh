#!/usr/bin/env bash
# The GPU check's entry point (issue 19): install the prepared wheels (bench/gpu_wheels.sh) from a local folder into
# a target folder put first on PYTHONPATH -- no index, no network -- then run bench/gpu_check.py.
#
#   bench/gpu_check.sh                 # on the GPU machine: every check, ~8 minutes on an H100/H200
#   bench/gpu_check.sh --no-speed      # without parts 6-7 (no 7B-shape model): a few minutes
#   bench/gpu_check.sh --dry-run       # CI / no GPU: builds what it would use, lists every check with its SKIP reason
#   bench/gpu_check.sh --help          # gpu_check.py's options (--only, --out, --workdir, --budget-s, ...)
#
# Environment: PYTHON (default .venv/bin/python when it exists, else python3), SQLFT_WHEELS (the wheel folder,
# default .whl/), SQLFT_SITE (where they are installed, default $TMPDIR/sqlft-gpu-site), SQLFT_NO_WHEELS=1 (skip).
# Results: bench/results/gpu_check.json and gpu_check.md (on CUDA); exit status 1 when any check FAILs.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
WHEELS="${SQLFT_WHEELS:-$REPO/.whl}"
SITE="${SQLFT_SITE:-${TMPDIR:-/tmp}/sqlft-gpu-site}"

# Nothing may be fetched while the check runs: no Hub, no W&B.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

if [ "${SQLFT_NO_WHEELS:-0}" != 1 ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    want="$(cd "$WHEELS" && ls -- *.whl | sort)"
    if [ ! -f "$SITE/.wheels" ] || [ "$(cat "$SITE/.wheels")" != "$want" ]; then
        rm -rf "$SITE"
        mkdir -p "$SITE"
        echo "gpu_check.sh: installing $(echo "$want" | wc -l) wheels from $WHEELS into $SITE (no index, no deps)"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
            --target "$SITE" "$WHEELS"/*.whl
        echo "$want" >"$SITE/.wheels"
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    echo "gpu_check.sh: $SITE first on PYTHONPATH ($(echo "$want" | tr '\n' ' '))"
elif [ "${SQLFT_NO_WHEELS:-0}" != 1 ]; then
    echo "gpu_check.sh: no wheels in $WHEELS (bench/gpu_wheels.sh makes them); using what $PYTHON has"
fi

exec "$PYTHON" "$REPO/bench/gpu_check.py" "$@"
