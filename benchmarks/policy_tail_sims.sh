#!/usr/bin/env bash
# The restock policy's tail above the forecast's top quantile, A/B in one run per set (issue 16):
# every forecast policy with tail=last_gap, median_chord (the default since) and upper_fit; the
# policies that differ only in tail share one model (fitted and asked once). The subsets and
# review periods of benchmarks/overstock_sims.sh: UCI and Rossmann the last 56 days (Rossmann
# weekly review), FreshRetailNet all a 60-day warm-up leaves; L = 7, fill-rate target 0.95.
# Usage: benchmarks/policy_tail_sims.sh [uci|rossmann|freshretailnet|full_uci ...] (default: the
# three subsets side by side). SHELFCAST: the CLI (default .venv/bin/shelfcast).
set -u
S=${SHELFCAST:-.venv/bin/shelfcast}; D=../shared/data; O=benchmarks/results/generalisation/policy_tail
# Every tail named (the committed runs, made when last_gap was the default, named it by
# leaving the key out: `forecast:lightgbm` there is `forecast:lightgbm:tail=last_gap` here).
tails() { local out="" t; for t in last_gap median_chord upper_fit; do
  out="$out,$1:tail=$t"; done; echo "${out#,}"; }
SERVED=$(tails forecast:served:warm_start_epochs=4)
LSTM=$(tails forecast:lstm:warm_start_epochs=4)
LGB=$(tails forecast:lightgbm)
BASE=forecast-errors,empirical,minmax,minmax-lr
sim() { n=$1; p=$2; f=$3; shift 3; echo "== $n start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/time -v nice -n 5 $S simulate --data $f --policies $p --service-level 0.95 \
    --lead-time-days 7 --no-progress --json $O/$n.json "$@" > $O/$n.log 2>&1
  echo "== $n end $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"; }
mkdir -p $O/full_uci
for set in "${@:-uci rossmann freshretailnet}"; do for s in $set; do case $s in
  uci) sim simulate_uci_online_retail $SERVED,$LSTM,$LGB,$BASE $D/uci_online_retail/daily_panel.csv.gz \
         --review-days 1 --days 56 & ;;
  rossmann) sim simulate_rossmann $SERVED,$LSTM,$LGB,$BASE $D/rossmann_store_sales/daily_100_stores.csv.gz \
         --review-days 7 --days 56 & ;;
  freshretailnet) sim simulate_freshretailnet $SERVED,$LSTM,$LGB,$BASE \
         $D/freshretailnet/daily_1111_series.csv.gz --warmup-days 60 --review-days 1 & ;;
  # the full default protocol (the last year after a 91-day warm-up, 10 refits), served only
  full_uci) sim full_uci/simulate_uci_online_retail $SERVED,$BASE \
         $D/uci_online_retail/daily_panel.csv.gz --review-days 1 \
         --plot $O/full_uci/simulate_uci_online_retail.png & ;;
  *) echo "unknown set $s" >&2; exit 2 ;;
esac; done; done
wait
