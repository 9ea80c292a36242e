#!/usr/bin/env bash
# The GPU check, one script (under 5 minutes on a CUDA host):
#   1. `shelfcast bench inference` on CUDA: full window and incremental, batch sizes up to
#      65,536, at the stream's window (56 days) and at a year-ago window (400 days);
#   2. `shelfcast bench pipeline` with SHELFCAST_DEVICE=cuda: the LSTM serving (a small model
#      trained first, or the cached one) beside the moving average, on a local Apache Kafka.
# JSON goes under $OUT when set, else benchmarks/results/gpu/.
#
#   benchmarks/gpu_check.sh                                  # a CUDA host
#   SHELFCAST_DEVICE=cpu GPU_CHECK_QUICK=1 benchmarks/gpu_check.sh   # CPU smoke run (minutes)
#
# Without a CUDA device it says so and skips the CUDA parts (exit 0), unless
# SHELFCAST_DEVICE=cpu asks for the same benches on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3 || command -v python)}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
DEVICE=${SHELFCAST_DEVICE:-cuda}
DEST=${OUT:-benchmarks/results/gpu}
QUICK=${GPU_CHECK_QUICK:-0}
mkdir -p "$DEST"
log() { echo "gpu_check: $*" >&2; }

if ! cuda=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null); then
  log "$PY cannot import torch: install shelfcast first (pip install -e .) or set PYTHON"
  exit 1
fi
"$PY" - "$DEST/env.json" "$DEVICE" <<'PYEOF'
import json, os, platform, subprocess, sys
import torch
info = {"device_asked": sys.argv[2], "torch": torch.__version__, "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "cpus": os.cpu_count(),
        "platform": platform.platform(), "loadavg_1m": os.getloadavg()[0]}
if torch.cuda.is_available():
    info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,utilization.gpu",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
with open(sys.argv[1], "w") as fh:
    json.dump(info, fh, indent=2)
PYEOF

if [ "$DEVICE" = cuda ] && [ "$cuda" != 1 ]; then
  log "no CUDA device here (torch.cuda.is_available() is False): CUDA benches skipped."
  log "on a GPU host run it as is; SHELFCAST_DEVICE=cpu runs the same benches on the CPU."
  echo '{"skipped": "no CUDA device"}' > "$DEST/skipped.json"
  exit 0
fi

if [ "$QUICK" = 1 ]; then
  SIZES=1,64,512,4096
  SECONDS_EACH=0.3
  REQUESTS=2000
  EVENTS=12000
  SKUS=1000
else
  SIZES=1,64,512,4096,16384,65536
  SECONDS_EACH=1
  REQUESTS=50000
  EVENTS=100000
  SKUS=5000
fi
if [ "$DEVICE" = cuda ]; then
  export SHELFCAST_MAX_BATCH=${SHELFCAST_MAX_BATCH:-4096}  # as k8s/overlays/gpu
  export SHELFCAST_MAX_WAIT_MS=${SHELFCAST_MAX_WAIT_MS:-10}
fi
START=$(date +%s)
for WINDOW in 56 400; do
  log "inference bench on $DEVICE: window $WINDOW, batch sizes $SIZES"
  "$PY" -m shelfcast bench inference --device "$DEVICE" --batch-sizes "$SIZES" \
    --window "$WINDOW" --seconds "$SECONDS_EACH" --requests "$REQUESTS" \
    --json "$DEST/inference_${DEVICE}_window${WINDOW}.json" > /dev/null
done
log "pipeline bench with SHELFCAST_DEVICE=$DEVICE ($EVENTS events, LSTM vs moving average)"
SHELFCAST_DEVICE=$DEVICE "$PY" -m shelfcast bench pipeline --events "$EVENTS" --skus "$SKUS" \
  --compare-baseline --json "$DEST/pipeline_${DEVICE}.json" > /dev/null
log "done in $(( $(date +%s) - START )) s; JSON in $DEST"
