# Benchmarks: programs that print CSV (never tests). Run them by hand, e.g.
#   bench/pipeline --size 1G --rtt-ms 0,1,10,40
noinst_PROGRAMS += bench/pipeline
bench_pipeline_SOURCES = bench/pipeline.c
bench_pipeline_LDADD = libr3core.la
