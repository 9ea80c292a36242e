#!/usr/bin/env bash
# Before/after of the LightGBM quantile-leaf fix on the same subsets as served_cli (UCI and
# Rossmann the last 56 days, FreshRetailNet all a 60-day warm-up leaves), one sitting.
# UCI also runs the served mix before/after; Rossmann and FreshRetailNet LightGBM only (CPU).
set -u
S=.venv/bin/shelfcast; D=../shared/data; O=benchmarks/results/generalisation/overstock
LGB=forecast:lightgbm:tail_leaf_rows=0:target_cap_quantile=1,forecast:lightgbm
SERVED=forecast:served:warm_start_epochs=4:lightgbm_tail_leaf_rows=0:lightgbm_target_cap_quantile=1,forecast:served:warm_start_epochs=4
sim() { n=$1; p=$2; f=$3; shift 3; echo "== $n start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/time -v nice -n 5 $S simulate --data $f --policies $p,forecast-errors,minmax \
  --service-level 0.95 --lead-time-days 7 --no-progress --json $O/simulate_$n.json "$@" \
  > $O/simulate_$n.log 2>&1
  echo "== $n end $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"; }
sim uci_online_retail $LGB,$SERVED $D/uci_online_retail/daily_panel.csv.gz --review-days 1 --days 56 &
sim rossmann $LGB $D/rossmann_store_sales/daily_100_stores.csv.gz --review-days 7 --days 56 &
sim freshretailnet $LGB $D/freshretailnet/daily_1111_series.csv.gz --warmup-days 60 --review-days 1 &
wait
