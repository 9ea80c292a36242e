#!/usr/bin/env bash
# Before/after of the LightGBM quantile-leaf fix, the same subsets as served_cli, one sitting.
set -u
S=.venv/bin/shelfcast; D=../../shared/data; O=benchmarks/results/generalisation/overstock
P=forecast:lightgbm:tail_leaf_rows=0:target_cap_quantile=1,forecast:lightgbm,forecast:served:warm_start_epochs=4:lightgbm_tail_leaf_rows=0:lightgbm_target_cap_quantile=1,forecast:served:warm_start_epochs=4,forecast-errors,minmax
sim() { n=$1; f=$2; shift 2; echo "== $n start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/time -v nice -n 5 $S simulate --data $f --policies $P --service-level 0.95 \
  --lead-time-days 7 --no-progress --json $O/simulate_$n.json "$@" > $O/simulate_$n.log 2>&1
  echo "== $n end $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg) rc $?"; }
sim uci_online_retail $D/uci_online_retail/daily_panel.csv.gz --review-days 1 --days 56
sim rossmann $D/rossmann_store_sales/daily_100_stores.csv.gz --review-days 7 --days 56
sim freshretailnet $D/freshretailnet/daily_1111_series.csv.gz --warmup-days 60 --review-days 1
