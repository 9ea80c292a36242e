#!/usr/bin/env bash
# The recordings behind benchmarks/README "Served policy vs the LSTM's" (issue 16): each real set
# through `shelfcast simulate` exactly as the committed runs, forecasts recorded for replays.
# usage: [SIMPOLICY_OUT=DIR] benchmarks/simpolicy_runs.sh uci|rossmann|freshretailnet   (from the repo root)
set -euo pipefail
D=../shared/data; O=${SIMPOLICY_OUT:-benchmarks/results/generalisation/sim_policy}; R=${SIMPOLICY_REC:-/tmp/simpolicy}
PY=${PYTHON:-python}
mkdir -p "$O" "$R"
rec() { n=$1; shift; echo "start $n $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$O/lanes.log"
  /usr/bin/time -v nice -n 5 "$PY" benchmarks/simpolicy_record.py "$R/$n.npz" -- simulate "$@" \
    --service-level 0.95 --lead-time-days 7 --no-progress --json "$O/simulate_$n.json" 2> "$O/simulate_$n.log"
  echo "end $n $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$O/lanes.log"; }
case $1 in
  uci) rec uci_online_retail --data $D/uci_online_retail/daily_panel.csv.gz --review-days 1 \
    --policies forecast:served:warm_start_epochs=4,forecast:lstm:warm_start_epochs=4,forecast:seasonal_naive,forecast:moving_average,forecast:tsb,minmax,minmax-lr,empirical,forecast-errors ;;
  rossmann) rec rossmann --data $D/rossmann_store_sales/daily_100_stores.csv.gz --review-days 7 --days 56 \
    --policies forecast:served:warm_start_epochs=4,forecast:lstm:warm_start_epochs=4,forecast:lightgbm,forecast:seasonal_naive,forecast:moving_average,forecast:tsb,minmax,minmax-lr,empirical,forecast-errors ;;
  freshretailnet) rec freshretailnet --data $D/freshretailnet/daily_1111_series.csv.gz --warmup-days 60 --review-days 1 \
    --policies forecast:served:warm_start_epochs=4,forecast:lstm:warm_start_epochs=4,forecast:lightgbm,forecast:seasonal_naive,forecast:moving_average,forecast:tsb,minmax,minmax-lr,empirical,forecast-errors ;;
esac
