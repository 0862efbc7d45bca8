"""`python -m harness.bench A/bench.json B/bench.json`: whether two bench runs measured the
same workload and agree within 10% on every ratio (exit status 0) or not (1)."""

from harness.bench.rounds import main

raise SystemExit(main())
