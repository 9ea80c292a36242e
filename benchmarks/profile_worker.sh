#!/usr/bin/env bash
# py-spy profile of the batch worker during `shelfcast bench pipeline` (raw collapsed stacks),
# then a summary by module (benchmarks/profile_summary.py).
#
#   PYTHONPATH=$PWD benchmarks/profile_worker.sh OUT_PREFIX [bench pipeline options...]
#   e.g. benchmarks/profile_worker.sh /tmp/prof-main --events 100000 --workers 1
#   (the Faust engine: SHELFCAST_ENGINE=faust PROFILE_UNDER=ingest ...)
#
# Writes OUT_PREFIX.txt (py-spy raw), OUT_PREFIX-bench.json (the bench's JSON) and
# OUT_PREFIX-summary.json. py-spy attaches to the first worker the bench starts (the
# `python -m shelfcast worker` child) and samples it until it exits; the broker, the load
# generator and the bench itself are not sampled.
set -euo pipefail
out=${1:?usage: profile_worker.sh OUT_PREFIX [bench pipeline options...]}
shift
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$(command -v python)}
spy=${PY_SPY:-$(dirname "$py")/py-spy}
rate=${PY_SPY_RATE:-200}

"$py" -m shelfcast bench pipeline --json "$out-bench.json" "$@" &
bench=$!
worker=""
for _ in $(seq 1 600); do  # the worker starts after the broker and the backlog: wait for it
    worker=$(pgrep -n -P "$bench" -f -- "-m shelfcast worker" || true)
    [ -n "$worker" ] && break
    kill -0 "$bench" 2>/dev/null || break
    sleep 0.5
done
if [ -z "$worker" ]; then
    echo "no worker process seen; the bench exits with:" >&2
    wait "$bench"
    exit 1
fi
echo "profiling worker pid $worker at $rate Hz" >&2
"$spy" record -r "$rate" -f raw -o "$out.txt" -p "$worker" --nonblocking >/dev/null 2>&1 || true
wait "$bench"
# the steady state (not start-up): samples inside the engine's fetch-process-send loop and the
# tasks it runs beside it (the partitions' processing, the inferencer's flushes on the loop,
# the producer's sends, the commits)
steady="BatchEngine._loop|BatchProcessor.process|Inferencer._flush_on_loop|Sender._send_produce_req"
steady="$steady|BatchEngine._commit|BatchEngine._send_outputs"
"$py" "$here/benchmarks/profile_summary.py" "$out.txt" --under "${PROFILE_UNDER:-$steady}" \
    --json "$out-summary.json"
