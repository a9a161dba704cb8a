# SPDX-License-Identifier: BSD-3-Clause
# Shared helpers for integration tests (sourced). Each test starts the real
# servers it needs on free loopback ports and stops them on exit.
# Exit 77 = skipped (only when a kernel feature is truly absent), 99 = hard error.
set -u
: "${top_builddir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
export LD_LIBRARY_PATH="$top_builddir/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
T_NAME=$(basename "$0" .sh)
T_DIR=$(mktemp -d "${TMPDIR:-/tmp}/r3-$T_NAME.XXXXXX")
T_PIDS=""

t_cleanup() {
    local p
    for p in $T_PIDS; do kill "$p" 2>/dev/null || true; done
    sleep 0.1
    for p in $T_PIDS; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$T_DIR"
}
trap t_cleanup EXIT
# Each test runs in its own scratch directory, so that whatever a program
# writes to the current directory (fio's verify state, a default image) goes
# away with it instead of staying in the build tree.
cd "$T_DIR" || { echo "[$T_NAME] ERROR: cannot enter $T_DIR" >&2; exit 99; }

t_log() { echo "[$T_NAME] $*" >&2; }
t_fail() { echo "[$T_NAME] FAIL: $*" >&2; exit 1; }
t_skip() { echo "[$T_NAME] SKIP: $*" >&2; exit 77; }
t_need() { command -v "$1" >/dev/null 2>&1 || { echo "[$T_NAME] ERROR: $1 is not installed (run ./bootstrap --deps)" >&2; exit 99; }; }

# Remember a background process for cleanup: t_bg CMD ARGS...
t_bg() { "$@" & T_PIDS="$T_PIDS $!"; T_LAST_PID=$!; }

# A free TCP port on 127.0.0.1 (bound then released by the kernel's choice).
t_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Wait until 127.0.0.1:PORT accepts connections (or a unix socket path exists), up to 10 s.
t_wait_port() {
    local i
    for i in $(seq 1 200); do
        if [ "${1#/}" != "$1" ]; then [ -S "$1" ] && return 0
        elif (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    t_fail "nothing listens on $1 after 10 s"
}

# Run with a time limit so that a hang is a failure, not a stuck suite.
t_timeout() { timeout --kill-after=5 "$@"; }

# R3_TEST_SLOW=1 (set by .ci/run for its ThreadSanitizer stage): programs run
# several times slower. A wall-clock bound that is what a test checks stays
# as it is in the plain build and is scaled with t_slow under a sanitizer;
# a bound that only guards against a hang is wide enough for both.
# t_slow N: N, or N times R3_TEST_SLOW_FACTOR (default 5) when R3_TEST_SLOW=1.
t_slow() { if [ "${R3_TEST_SLOW:-0}" = 1 ]; then echo $(( $1 * ${R3_TEST_SLOW_FACTOR:-5} )); else echo "$1"; fi; }

# The one checker of the tests (tests/r3check.c) and the one test pattern
# (tests/common/pattern.h; pattern.py is the same in python3).
R3CHECK="$top_builddir/tests/r3check"
PATTERN_PY="$top_srcdir/tests/common/pattern.py"

# t_require FEATURE...: skip (exit 77) with the reason when the kernel lacks
# one, as the library's probe sees it (features: tests/common/requires.h).
t_require() {
    local why rc=0
    why=$("$R3CHECK" requires "$@") || rc=$?
    [ "$rc" = 0 ] && return 0
    [ "$rc" = 77 ] && t_skip "$why"
    t_fail "r3check requires $* exited $rc"
}

# Certificates: t_ca, t_cert.
. "$top_srcdir/tests/common/certs.sh"
