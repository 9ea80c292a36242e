#!/usr/bin/env bash
# The recordings behind benchmarks/README "Cumulative mix weights that pay for movement" (issue 16):
# the served policy (and min/max) of each real set through `shelfcast simulate` with the flags of
# simpolicy_runs.sh, the served mix's parts recorded (benchmarks/cumweights_record.py) for replays.
# usage: benchmarks/cumweights_runs.sh uci|uci_review2|rossmann|rossmann112|storeitem|freshretailnet   (from the repo root)
set -euo pipefail
D=../shared/data; O=benchmarks/results/generalisation/cum_weights; R=${CUMWEIGHTS_REC:-/tmp/cumweights}
PY=${PYTHON:-python}
P=forecast:served:warm_start_epochs=4,minmax
mkdir -p "$O" "$R"
rec() { n=$1; shift; echo "start $n $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$O/lanes.log"
  /usr/bin/time -v nice -n 10 "$PY" benchmarks/cumweights_record.py "$R/$n.npz" -- simulate "$@" \
    --service-level 0.95 --lead-time-days 7 --no-progress --json "$O/simulate_$n.json" 2> "$O/simulate_$n.log"
  echo "end $n $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$O/lanes.log"; }
case $1 in
  uci) rec uci_online_retail --data $D/uci_online_retail/daily_panel.csv.gz --review-days 1 --policies $P ;;
  uci_review2) rec uci_online_retail_review2 --data $D/uci_online_retail/daily_panel.csv.gz --review-days 2 \
    --policies forecast:served:warm_start_epochs=4:cumulative_weights=levels,minmax ;;  # a second protocol: the weights as before "fall" was the default, replayed with it
  rossmann) rec rossmann --data $D/rossmann_store_sales/daily_100_stores.csv.gz --review-days 7 --days 56 --policies $P ;;
  rossmann112) rec rossmann_112 --data $D/rossmann_store_sales/daily_100_stores.csv.gz --review-days 7 --days 112 --policies $P ;;  # a confirmation
  storeitem) rec store_item_56 --data $D/store_item_demand/train.csv.gz --id-cols store,item --date-col date --target-col sales --max-series 200 --days 56 --review-days 1 --policies $P ;;  # fresh data: a confirmation
  freshretailnet) rec freshretailnet --data $D/freshretailnet/daily_1111_series.csv.gz --warmup-days 60 --review-days 1 --policies $P ;;
esac
