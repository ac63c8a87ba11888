#!/usr/bin/env bash
# The GPU path in one run (benchmarks/device_check.py): a 10 s clip from a release-layout folder,
# one GRPO step with judge:mini, a 2-rank torchrun shard check. PASS / FAIL / SKIP lines; on a
# machine without a GPU the CUDA parts are skipped, saying so. Budget: under 8 minutes on one GPU.
#
#   benchmarks/device_check.sh              # from the repository root, in the `make test` venv
#
# Where the packages are missing (a machine that cannot reach PyPI), wheels in .whl/ are installed
# into /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if ! $PY -c "import soundfile, soxr, pyloudnorm, bigvgan" 2>/dev/null && compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
exec timeout 470 "$PY" benchmarks/device_check.py "$@"
