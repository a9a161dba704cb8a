# SPDX-License-Identifier: BSD-3-Clause
# examples: small programs a user copies from.
noinst_PROGRAMS += examples/region_demo
examples_region_demo_SOURCES = examples/region_demo.c
examples_region_demo_LDADD = libr3.la
EXTRA_DIST += examples/main-job.sh examples/fill.py
