# Benchmarks: programs that print CSV (never tests). Run them by hand, e.g.
#   bench/pipeline --size 1G --rtt-ms 0,1,10,40
noinst_PROGRAMS += bench/pipeline
bench_pipeline_SOURCES = bench/pipeline.c
bench_pipeline_LDADD = libr3.la

# Eviction under r3run --max-resident (issue 11): plain vs budgets, file:// and r3://
#   bench/evict --script ../tests/r3run/twopass.py --mib 4096 --budgets 4G,1G,512M --r3serve ./r3serve
noinst_PROGRAMS += bench/evict
bench_evict_SOURCES = bench/evict.c
