#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# bench/nbd.sh: the NBD benchmark (CSV on stdout; not a test). One run:
#  1. fio --ioengine=nbd against r3serve --nbd (mem source) and nbdkit memory,
#     both filled with the same random data first: sequential 1 MiB reads at
#     QD 16 and 4 KiB random reads at QD 32, with 1 and 4 jobs (connections),
#     and nbdcopy --connections=4 to null:; ROUNDS rounds, each test on r3serve
#     then nbdkit, ratios r3/nbdkit per round.
#  2. mmap first sequential read of SIZE through r3mount (FUSE) vs nbdfuse
#     on nbdkit memory.
#  3. nbd-managed and nbd-direct regions over a mem source behind a 10 ms
#     delay stage: open-to-first-byte, sequential read, writes (+ sync).
# Usage: bench/nbd.sh [BUILDDIR] (default: the current directory)
# Env: SIZE (default 1G), FIO_SECONDS (10), FIO_SIZE (1G), ROUNDS (3), FIO_ONLY=1
set -u
usage() {
    cat <<'EOF2'
Usage: bench/nbd.sh [BUILDDIR]
The NBD benchmark: prints CSV (bench,what,target,size,delay_us,value,unit) on
stdout; notes on stderr. Runs, in one go:
  1. fio --ioengine=nbd against r3serve --nbd (mem source) and nbdkit memory:
     sequential 1 MiB reads at QD 16 and 4 KiB random reads at QD 32, 1 and 4
     jobs, and nbdcopy --connections=4 to null:; ROUNDS rounds (A B A B)
  2. the first mmap read of SIZE through r3mount (FUSE) and through nbdfuse
  3. nbd-managed and nbd-direct regions over a mem source behind a 10 ms delay
BUILDDIR is the build directory holding r3serve, r3mount and bench/nbd
(default: the current directory).
Environment: SIZE (default 1G), FIO_SECONDS (10), FIO_SIZE (1G), ROUNDS (3),
FIO_ONLY=1 (stop after part 1).
Needs fio, nbdkit, nbdcopy, nbdfuse, python3.
  -h, --help     show this help and exit
  -V, --version  print the version and exit
EOF2
}
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    -V|--version)
        v=$(sed -n 's/^AC_INIT(\[r3\], \[\([^]]*\)\].*/\1/p' "$(dirname "$0")/../configure.ac" 2>/dev/null)
        echo "bench/nbd.sh (r3) ${v:-unknown}"; exit 0 ;;
    -*) echo "bench/nbd.sh: unknown option '$1'" >&2
        echo "Try 'bench/nbd.sh --help' for more information." >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "bench/nbd.sh: unexpected argument '$2'" >&2
                  echo "Try 'bench/nbd.sh --help' for more information." >&2; exit 2; }
B=${1:-.}
[ -x "$B/r3serve" ] || { echo "bench/nbd.sh: no r3serve in '$B' (give the build directory)" >&2
                         echo "Try 'bench/nbd.sh --help' for more information." >&2; exit 2; }
SIZE=${SIZE:-1G}; FIO_SECONDS=${FIO_SECONDS:-10}; FIO_SIZE=${FIO_SIZE:-1G}
W=$(mktemp -d /tmp/r3-bench-nbd.XXXXXX)
PIDS=""
cleanup() {
    for m in "$W/r3m" "$W/kitm"; do mountpoint -q "$m" 2>/dev/null && { "$B/r3mount" -u "$m" 2>/dev/null || fusermount3 -u "$m"; }; done
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    sleep 0.3; rm -rf "$W"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
fio_run() { # URI RW BS QD [JOBS] -> "MB/s IOPS" (of all jobs together)
    fio --name=b --ioengine=nbd --uri="$1" --rw=$2 --bs=$3 --iodepth=$4 --size=$FIO_SIZE \
        --numjobs=${5:-1} --group_reporting \
        --runtime=$FIO_SECONDS --time_based --output-format=terse --terse-version=3 2>/dev/null |
        tail -1 | awk -F';' '{printf "%.1f %d\n", $7/1000*1024/1024, $8}'
}
echo "bench,what,target,size,delay_us,value,unit"
echo "# machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) (shared; numbers are noisy)" >&2

# 1. fio and nbdcopy: r3serve vs nbdkit memory, ROUNDS rounds, each test
#    run on r3serve then on nbdkit (A B A B), a ratio per round.
RP=$(port); NP=$(port)
"$B/r3serve" --nbd 127.0.0.1:$RP --source "mem:?size=$FIO_SIZE" 2>/dev/null & PIDS="$PIDS $!"
nbdkit -f -i 127.0.0.1 -p $NP memory $FIO_SIZE & PIDS="$PIDS $!"
wait_port $RP; wait_port $NP
head -c $FIO_SIZE /dev/urandom > "$W/fill"
nbdcopy "$W/fill" "nbd://127.0.0.1:$RP/" && nbdcopy "$W/fill" "nbd://127.0.0.1:$NP/"; rm -f "$W/fill"
copy_run() { # URI -> "MB/s" (nbdcopy --connections=4 of the whole export to null:)
    local t0 t1
    t0=$(date +%s.%N)
    nbdcopy --connections=4 "$1" null: 2>/dev/null || { echo 0; return; }
    t1=$(date +%s.%N)
    awk -v a=$t0 -v b=$t1 -v n=$(numfmt --from=iec $FIO_SIZE) 'BEGIN{printf "%.1f\n", n/(b-a)/1048576}'
}
row() { # what r3 kit unit round
    echo "fio,$1,r3serve,$FIO_SIZE,0,$2,$4"
    echo "fio,$1,nbdkit-memory,$FIO_SIZE,0,$3,$4"
}
for round in $(seq ${ROUNDS:-3}); do
    echo "# round $round, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    # rw bs qd jobs (what: rw[Nj]_bs_qdN, the shape r3bench parses)
    for t in "read 1M 16 1" "randread 4k 32 1" "read 1M 16 4" "randread 4k 32 4"; do
        set -- $t
        name=$1; [ $4 -gt 1 ] && name="$1$4j"
        r=$(fio_run "nbd://127.0.0.1:$RP/" $1 $2 $3 $4); k=$(fio_run "nbd://127.0.0.1:$NP/" $1 $2 $3 $4)
        set -- $name $2 $3 $r $k
        row "${1}_${2}_qd${3}_MBps" $4 $6 MB/s
        row "${1}_${2}_qd${3}_IOPS" $5 $7 IOPS
        awk -v a=$4 -v b=$6 -v n="${1}_${2}_qd${3}" -v r=$round \
            'BEGIN{printf "fio,%s_ratio_MBps,r3serve/nbdkit,,0,%.2f,x\n", n, (b>0?a/b:0)
                   printf "# round %s %s: %.2fx nbdkit\n", r, n, (b>0?a/b:0) > "/dev/stderr"}'
    done
    r=$(copy_run "nbd://127.0.0.1:$RP/"); k=$(copy_run "nbd://127.0.0.1:$NP/")
    echo "nbdcopy,conn4_MBps,r3serve,$FIO_SIZE,0,$r,MB/s"
    echo "nbdcopy,conn4_MBps,nbdkit-memory,$FIO_SIZE,0,$k,MB/s"
    awk -v a=$r -v b=$k -v r=$round 'BEGIN{printf "nbdcopy,conn4_ratio_MBps,r3serve/nbdkit,,0,%.2f,x\n", (b>0?a/b:0)
        printf "# round %s nbdcopy --connections=4: %.2fx nbdkit\n", r, (b>0?a/b:0) > "/dev/stderr"}'
done
for p in $PIDS; do kill $p 2>/dev/null; done; wait 2>/dev/null; PIDS=""
[ "${FIO_ONLY:-0}" = 1 ] && exit 0

# 2. mmap first read through FUSE: r3mount vs nbdfuse + nbdkit memory
mkdir -p "$W/r3m" "$W/kitm"
RP=$(port); NP=$(port)
"$B/r3mount" --nbd-listen 127.0.0.1:$RP "mem:?size=$SIZE" "$W/r3m" >/dev/null || echo "# r3mount failed" >&2
nbdkit -f -i 127.0.0.1 -p $NP memory $SIZE & PIDS="$PIDS $!"
wait_port $RP; wait_port $NP
head -c $SIZE /dev/urandom > "$W/fill"
nbdcopy "$W/fill" "nbd://127.0.0.1:$RP/" && nbdcopy "$W/fill" "nbd://127.0.0.1:$NP/"; rm -f "$W/fill"
nbdfuse -P "$W/nbdfuse.pid" "$W/kitm" "nbd://127.0.0.1:$NP/" &
for i in $(seq 100); do [ -s "$W/nbdfuse.pid" ] && break; sleep 0.1; done
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null
"$B/bench/nbd" mmapread "$W/r3m/disk" r3mount-fuse
"$B/bench/nbd" mmapread "$W/kitm/nbd" nbdfuse-nbdkit
"$B/r3mount" -u "$W/r3m"; fusermount3 -u "$W/kitm"
for p in $PIDS; do kill $p 2>/dev/null; done; wait 2>/dev/null; PIDS=""

# 3. regions over a 10 ms delay stage (and without a delay for the open time)
"$B/bench/nbd" region nbd-managed $SIZE 10000 1M 32 16
"$B/bench/nbd" region nbd-direct $SIZE 10000 1M 0 1
"$B/bench/nbd" region nbd-managed 64M 0 64K 4 1 | grep open_to_first
"$B/bench/nbd" region nbd-direct 64M 0 64K 0 1 | grep open_to_first
