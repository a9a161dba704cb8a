#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# r3bench end to end: `r3bench run --smoke` (every experiment, real engines and
# servers on loopback) exits 0 (a minute on an idle machine); results.csv has the exact
# header and rows for every experiment that ran; every plot is a non-empty SVG
# and PNG; report.md names every experiment; plot and report redo the same
# from the CSV alone; the tool's surface follows the tools' convention.
source "$top_srcdir/tests/integration/lib.sh"
t_need python3
t_need gnuplot
B="$top_builddir/r3bench"
[ -x "$B" ] || t_fail "$B is not built"
OUT=$T_DIR/out

# --- surface: --help, --version, usage errors (two lines, exit 2)
"$B" --help | grep -q '^Usage: r3bench list' || t_fail "--help does not print the usage"
[ "$("$B" --version)" = "r3bench (r3) $("$B" --version | awk '{print $3}')" ] || t_fail "--version"
"$B" --version | grep -Eq '^r3bench \(r3\) [0-9]' || t_fail "--version format"
for bad in "frobnicate" "run --frob" "run 99" "run --runs 0" "run --rtt-mode warp" "plot" "run --out"; do
    set +e; "$B" $bad >"$T_DIR/o" 2>"$T_DIR/e"; rc=$?; set -e
    [ $rc -eq 2 ] || t_fail "'r3bench $bad' exited $rc, not 2"
    [ "$(wc -l <"$T_DIR/e")" -eq 2 ] || t_fail "'r3bench $bad': not two lines on stderr: $(cat "$T_DIR/e")"
    sed -n 1p "$T_DIR/e" | grep -q '^r3bench: ' || t_fail "'r3bench $bad': first line"
    sed -n 2p "$T_DIR/e" | grep -qx "Try 'r3bench --help' for more information." || t_fail "'r3bench $bad': second line"
    [ ! -s "$T_DIR/o" ] || t_fail "'r3bench $bad' printed on stdout"
done
set +e
"$B" list >"$T_DIR/list" || t_fail "list"
[ "$(grep -cE '^ ?[0-9]+  ' "$T_DIR/list")" -eq 15 ] || t_fail "list does not show 15 experiments"
grep -E '^11 ' -A1 "$T_DIR/list" | grep -q 'not available' && t_fail "migration is still 'not available'"

# --- the smoke run
t0=$(date +%s)
"$B" run --smoke --quiet --out "$OUT" 2>"$T_DIR/run.err"
rc=$?
t1=$(date +%s)
[ $rc -eq 0 ] || t_fail "run --smoke exited $rc: $(tail -5 "$T_DIR/run.err")"
el=$((t1 - t0))
# --smoke aims at 60 s on an idle 2-core machine (65-74 s measured); that is a
# benchmark figure, not something this test asserts: under make check -j2 in CI
# it took 79 s. The limit here only tells a hang from a slow run (scaled by 10
# under a sanitizer, R3_TEST_SLOW in lib.sh; 287-342 s under TSan).
lim=$(R3_TEST_SLOW_FACTOR=10 t_slow 300)
t_log "smoke run took ${el}s (hang guard ${lim}s)"
[ $el -le "$lim" ] || t_fail "run --smoke took ${el}s (> ${lim}s): a hang?"
[ ! -s "$T_DIR/run.err" ] || t_fail "--quiet printed: $(head -3 "$T_DIR/run.err")"

# --- results.csv, meta.json
[ "$(head -1 "$OUT/results.csv")" = "experiment,strategy,source,transport,rtt_ms,workers,chunk,size,metric,value,unit,run" ] ||
    t_fail "results.csv header: $(head -1 "$OUT/results.csv")"
python3 - "$OUT" <<'PY' || t_fail "results.csv / meta.json check"
import csv, json, math, os, sys
out = sys.argv[1]
meta = json.load(open(os.path.join(out, "meta.json")))
for k in ("cores", "kernel", "load_before", "load_after", "git", "date", "options", "status"):
    assert k in meta, "meta.json lacks " + k
rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
names = {r["experiment"] for r in rows}
st = meta["status"]
assert len(st) == 15, "status of %d experiments" % len(st)
assert st["migration"] == "ok", st["migration"]
ran = [n for n, s in st.items() if s == "ok" or s.startswith("partial")]
assert len(ran) >= 10, "only %d experiments ran: %s" % (len(ran), st)
for n in ran:
    assert n in names, "experiment %s ran but has no rows" % n
for n, s in st.items():
    if n not in ran:
        assert n not in names, "experiment %s (%s) has rows" % (n, s)
for r in rows:
    v = float(r["value"])
    assert not math.isnan(v) and v >= 0, r
    assert r["metric"] and r["unit"], r
print("%d rows, %d experiments ran" % (len(rows), len(ran)))
PY

# --- plots: one SVG and one PNG per experiment with rows, non-empty and real
for e in $(tail -n +2 "$OUT/results.csv" | cut -d, -f1 | sort -u); do
    for ext in svg png; do
        f="$OUT/plots/$e.$ext"
        [ -s "$f" ] || t_fail "no plot $f"
    done
    head -c 8 "$OUT/plots/$e.png" | od -An -c | grep -q 'P   N   G' || t_fail "$e.png is not a PNG"
    grep -q '<svg' "$OUT/plots/$e.svg" || t_fail "$e.svg is not an SVG"
done

# --- report.md names every experiment
for e in $(grep -E '^ ?[0-9]+  ' "$T_DIR/list" | awk '{print $2}'); do
    grep -q "\`$e\`" "$OUT/report.md" || t_fail "report.md does not name $e"
done
grep -q 'Beside the study' "$OUT/report.md" || t_fail "report.md has no comparison with the study"

# --- plot and report again from the CSV alone
rm -rf "$OUT/plots" "$OUT/report.md"
"$B" plot "$OUT" 2>/dev/null || t_fail "r3bench plot"
"$B" report "$OUT" || t_fail "r3bench report"
[ -s "$OUT/report.md" ] && [ -s "$OUT/plots/first-chunk-latency.png" ] || t_fail "plot/report did not redo the files"
t_log "ok"
