/* SPDX-License-Identifier: BSD-3-Clause */
/* r3run: run an unmodified, dynamically linked program with its large
 * allocations in an r3 region. r3run validates every option, opens the
 * source once to check it, puts libr3preload.so in front of LD_PRELOAD,
 * passes the options in R3_* variables (src/preload/env.h) and execs the
 * program in its own process, so the exit status, a killing signal and the
 * pid are the program's own. The shim opens the region in that process. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"
#include "preload/env.h"
#include <r3/probe.h>

#define EXIT_R3 R3_PRELOAD_EXIT
#define EXIT_USAGE 2
#define DEFAULT_SIZE "4G"

static void usage(FILE *f)
{
    fprintf(f,
"Usage: r3run [OPTION]... [--] PROGRAM [ARG]...\n"
"Run PROGRAM with its allocations of at least --min-alloc bytes in a memory\n"
"region backed by a chunk source (r3's LD_PRELOAD shim, libr3preload.so).\n"
"\n"
"  --strategy NAME      how the region reaches the process (default uffd)\n"
"  --source URI         the chunk source (default: a temporary sparse image\n"
"                       $TMPDIR/r3run-XXXXXX.img, or in /var/tmp, removed at exit)\n"
"  --keep-image         keep the default image after the program exits\n"
"  --size SIZE          region size, K/M/G/T suffixes (default " DEFAULT_SIZE " with the\n"
"                       default source, else the source's size)\n"
"  --copy-on-write      writes stay in the region and never reach the source\n"
"                       (a read-only source is then fine; uffd strategy)\n"
"  --max-resident SIZE  keep at most SIZE of the region's chunks in memory: chunks\n"
"                       not used recently are dropped (written back first if\n"
"                       written) and fault back in from the source (uffd\n"
"                       strategy; no background pulls)\n"
"  --pipeline SPEC      stages between the source and the region, e.g.\n"
"                       'delay:ms=10,stats' or 'chunk:size=1M,cache,pull:workers=16'\n"
"  --chunk SIZE         unit of transfer and tracking, power of two >= 4K (default 64K)\n"
"  --min-alloc SIZE     smallest allocation placed in the region (default 64K)\n"
"  --pull-workers N     background prefetch workers (default 0)\n"
"  --push-workers N     write-back workers (default 1)\n"
"  --push-interval DUR  write dirty chunks back every DUR (500ms, 2s; default: at exit);\n"
"                       also what SIGKILL can lose (SIGTERM, SIGINT, SIGHUP and\n"
"                       SIGQUIT with default handlers sync before the program dies)\n"
"  --sync-timeout DUR   give up a sync (the one at exit too) after DUR, say how much\n"
"                       was not written back and exit 125 (default 60s; 0s = never)\n"
"  --fault-threads N    fault handler threads (default 2)\n"
"  --prefetch MODE      sequential | none | hot | FILE (order of background pulls;\n"
"                       hot replays the --record-access log of an earlier run)\n"
"  --record-access FILE write the order in which chunks were first faulted to FILE\n"
"  --stats              print a summary on stderr when the program exits\n"
"  --probe              print the kernel features r3 found and exit\n"
"  -h, --help           print this help and exit\n"
"  -V, --version        print the version and exit\n"
"\n"
"Durations take a unit: us, ms, s, m. Options stop at the first non-option.\n"
"The exit status is PROGRAM's own; 127 if it is not found, 126 if it cannot\n"
"run, 125 if r3 itself fails (also when the final sync cannot write\n"
"everything back), 2 for a usage error.\n"
"Static and setuid programs are refused: LD_PRELOAD cannot reach them.\n");
    const struct r3_strategy_ops *const *s = r3_strategy_list();
    fprintf(f, "Strategies in this build:");
    for (; *s; s++)
        fprintf(f, " %s", (*s)->name);
    fprintf(f, "\n");
}

/* "r3run: <what>" and exit: status EXIT_R3 for a failure (die), or
 * EXIT_USAGE with a second line saying where to look (usage_error). */
static void vquit(int status, const char *fmt, va_list ap) __attribute__((noreturn));
static void vquit(int status, const char *fmt, va_list ap)
{
    fputs("r3run: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    if (status == EXIT_USAGE)
        fputs("Try 'r3run --help' for more information.\n", stderr);
    exit(status);
}

static int die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static int die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vquit(EXIT_R3, fmt, ap);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vquit(EXIT_USAGE, fmt, ap);
}

static uint64_t opt_size(const char *name, const char *v)
{
    uint64_t x;
    if (r3_parse_size(v, &x) < 0)
        usage_error("--%s %s: not a size (like 64K, 512M, 4G)", name, v);
    return x;
}

static uint64_t opt_uint(const char *name, const char *v, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || !*v || *v == '-' || x > max)
        usage_error("--%s %s: not a number from 0 to %llu", name, v, (unsigned long long)max);
    return x;
}

static uint64_t opt_duration(const char *name, const char *v)
{
    uint64_t ms;
    if (r3_util_parse_duration_ms(v, &ms) < 0)
        usage_error("--%s %s: not a duration: %s", name, v, r3_last_error());
    return ms;
}

/* The shim: R3_PRELOAD_LIB, next to this executable (build tree: also in
 * .libs/), else the installed one. */
static char *find_shim(void)
{
    const char *e = getenv("R3_PRELOAD_LIB");
    if (e && *e) {
        if (e[0] != '/' || access(e, R_OK) < 0)
            die("R3_PRELOAD_LIB=%s: not an absolute path to a readable file", e);
        return strdup(e);
    }
    char exe[PATH_MAX], *p;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        *slash = '\0';
        static const char *const rel[] = { "libr3preload.so", ".libs/libr3preload.so" };
        for (int i = 0; i < 2; i++) {
            if (asprintf(&p, "%s/%s", exe, rel[i]) < 0)
                die("out of memory");
            if (access(p, R_OK) == 0)
                return p;
            free(p);
        }
    }
    if (access(R3_LIBDIR "/libr3preload.so", R_OK) == 0)
        return strdup(R3_LIBDIR "/libr3preload.so");
    die("libr3preload.so was not found next to r3run nor in " R3_LIBDIR
        "; install r3 or set R3_PRELOAD_LIB=/path/to/libr3preload.so");
}

/* PROGRAM resolved like execvp does; exits 127/126 as a shell would. */
static char *resolve(const char *prog)
{
    char *p;
    if (strchr(prog, '/')) {
        if (access(prog, F_OK) < 0)
            fprintf(stderr, "r3run: %s: %s\n", prog, strerror(errno)), exit(127);
        return strdup(prog);
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    char *dirs = strdup(path), *save = NULL, *found = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        if (asprintf(&p, "%s/%s", *d ? d : ".", prog) < 0)
            die("out of memory");
        struct stat st;
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            if (access(p, X_OK) == 0) {
                free(found);
                found = p;
                break;
            }
            if (!found) {         /* remember, in case nothing executable comes */
                found = p;
                continue;
            }
        }
        free(p);
    }
    free(dirs);
    if (!found)
        fprintf(stderr, "r3run: %s: command not found\n", prog), exit(127);
    return found;
}

/* 1 if the ELF file at fd has a PT_INTERP header, 0 if not, -1 if not ELF. */
static int elf_dynamic(int fd)
{
    unsigned char id[EI_NIDENT];
    if (pread(fd, id, sizeof id, 0) != (ssize_t)sizeof id || memcmp(id, ELFMAG, SELFMAG))
        return -1;
    uint64_t phoff;
    unsigned phnum, phentsize;
    if (id[EI_CLASS] == ELFCLASS64) {
        Elf64_Ehdr h;
        if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h)
            return -1;
        phoff = h.e_phoff, phnum = h.e_phnum, phentsize = h.e_phentsize;
    } else if (id[EI_CLASS] == ELFCLASS32) {
        Elf32_Ehdr h;
        if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h)
            return -1;
        phoff = h.e_phoff, phnum = h.e_phnum, phentsize = h.e_phentsize;
    } else {
        return -1;
    }
    if (phnum > 4096 || phentsize < 8)
        return -1;
    for (unsigned i = 0; i < phnum; i++) {
        uint32_t type;
        if (pread(fd, &type, sizeof type, (off_t)(phoff + (uint64_t)i * phentsize)) !=
            (ssize_t)sizeof type)
            return -1;
        if (type == PT_INTERP)
            return 1;
    }
    return 0;
}

/* Refuse what LD_PRELOAD cannot reach: static programs (also behind a #!
 * line) and programs that run with other ids. */
static void check_program(const char *path, int depth)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        fprintf(stderr, "r3run: %s: %s\n", path, strerror(e));
        exit(e == ENOENT ? 127 : 126);
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || access(path, X_OK) < 0) {
        fprintf(stderr, "r3run: %s: %s\n", path,
                S_ISDIR(st.st_mode) ? "is a directory" : "permission denied (not executable)");
        exit(126);
    }
    if (((st.st_mode & S_ISUID) && st.st_uid != geteuid()) ||
        ((st.st_mode & S_ISGID) && st.st_gid != getegid())) {
        fprintf(stderr, "r3run: %s is set%s: the dynamic linker ignores LD_PRELOAD for "
                "programs that change ids, so r3's shim could not be loaded; refusing to run it\n",
                path, (st.st_mode & S_ISUID) ? "uid" : "gid");
        exit(126);
    }
    int dyn = elf_dynamic(fd);
    char line[256] = "";
    if (dyn < 0 && depth == 0) {
        ssize_t n = pread(fd, line, sizeof line - 1, 0);
        line[n > 0 ? n : 0] = '\0';
    }
    close(fd);
    if (dyn == 0) {
        fprintf(stderr, "r3run: %s is statically linked: it has no dynamic linker (no "
                "PT_INTERP), so LD_PRELOAD cannot put r3's shim in front of its malloc; "
                "refusing to run it (use a dynamically linked build)\n", path);
        exit(126);
    }
    if (dyn < 0 && line[0] == '#' && line[1] == '!') {
        char *interp = line + 2 + strspn(line + 2, " \t");
        interp[strcspn(interp, " \t\r\n")] = '\0';
        if (interp[0] == '/')
            check_program(interp, depth + 1);
    }
    /* Anything else: exec decides (ENOEXEC -> 126). */
}

static const char *const managed[] = {
    "R3_SOURCE", "R3_STRATEGY", "R3_SIZE", "R3_CHUNK", "R3_MIN_ALLOC", "R3_PULL_WORKERS",
    "R3_PUSH_WORKERS", "R3_PUSH_INTERVAL", "R3_FAULT_THREADS", "R3_PREFETCH",
    "R3_RECORD_ACCESS", "R3_STATS", "R3_PID", "R3_SYNC_TIMEOUT", "R3_COPY_ON_WRITE",
    "R3_UNLINK_SOURCE", "R3_MAX_RESIDENT", "R3_PIPELINE", "R3_SCRATCH", NULL,
};

/* The default source: a sparse image of size bytes, created (mode 0600,
 * a fresh name) in $TMPDIR or /var/tmp (large temporary files that should
 * not live in RAM), never in the current directory. */
static char *default_image(uint64_t size, char **path_out)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/var/tmp";
    char *path, *uri;
    if (asprintf(&path, "%s/r3run-XXXXXX.img", dir) < 0)
        die("out of memory");
    int fd = mkostemps(path, 4, O_CLOEXEC);
    if (fd < 0)
        die("cannot create the default image in %s: %s (give --source, or set TMPDIR)", dir,
            strerror(errno));
    if (ftruncate(fd, (off_t)size) < 0) {
        int e = errno;
        unlink(path);
        die("cannot size the default image %s: %s", path, strerror(e));
    }
    close(fd);
    if (asprintf(&uri, "file://%s?size=%llu", path, (unsigned long long)size) < 0)
        die("out of memory");
    *path_out = path;
    return uri;
}

static void setenv_u(const char *name, uint64_t v)
{
    char b[32];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    setenv(name, b, 1);
}

int main(int argc, char **argv)
{
    enum { O_STRATEGY = 256, O_SOURCE, O_SIZE, O_CHUNK, O_MIN_ALLOC, O_PULL, O_PUSH,
           O_INTERVAL, O_FAULT, O_PREFETCH, O_RECORD, O_STATS, O_PROBE, O_SYNC_TIMEOUT,
           O_COW, O_KEEP, O_MAX_RESIDENT, O_PIPELINE };
    static const struct option opts[] = {
        { "strategy", required_argument, 0, O_STRATEGY },
        { "source", required_argument, 0, O_SOURCE },
        { "pipeline", required_argument, 0, O_PIPELINE },
        { "keep-image", no_argument, 0, O_KEEP },
        { "size", required_argument, 0, O_SIZE },
        { "chunk", required_argument, 0, O_CHUNK },
        { "min-alloc", required_argument, 0, O_MIN_ALLOC },
        { "copy-on-write", no_argument, 0, O_COW },
        { "max-resident", required_argument, 0, O_MAX_RESIDENT },
        { "pull-workers", required_argument, 0, O_PULL },
        { "push-workers", required_argument, 0, O_PUSH },
        { "push-interval", required_argument, 0, O_INTERVAL },
        { "sync-timeout", required_argument, 0, O_SYNC_TIMEOUT },
        { "fault-threads", required_argument, 0, O_FAULT },
        { "prefetch", required_argument, 0, O_PREFETCH },
        { "record-access", required_argument, 0, O_RECORD },
        { "stats", no_argument, 0, O_STATS },
        { "probe", no_argument, 0, O_PROBE },
        { "help", no_argument, 0, 'h' },
        { "version", no_argument, 0, 'V' },
        { 0, 0, 0, 0 },
    };
    const char *strategy = "uffd", *source = NULL, *prefetch = NULL, *record = NULL;
    const char *interval = NULL, *pipeline = NULL;
    uint64_t size = 0, chunk = R3_DEFAULT_CHUNK, min_alloc = 64 * 1024;
    uint64_t pull = 0, push = 1, fault = 2, interval_ms = 0;
    uint64_t sync_timeout_ms = R3_PRELOAD_SYNC_TIMEOUT_MS, max_resident = 0;
    bool stats = false, probe = false, have_size = false, cow = false, keep = false;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
        switch (c) {
        case O_STRATEGY: strategy = optarg; break;
        case O_SOURCE: source = optarg; break;
        case O_KEEP: keep = true; break;
        case O_SIZE:
            size = opt_size("size", optarg);
            have_size = true;
            if (size == 0)
                usage_error("--size must be greater than 0");
            break;
        case O_CHUNK:
            chunk = opt_size("chunk", optarg);
            if (!r3_is_pow2(chunk) || chunk < 4096 || chunk > (1u << 30))
                usage_error("--chunk %s: must be a power of two from 4K to 1G", optarg);
            break;
        case O_MIN_ALLOC:
            min_alloc = opt_size("min-alloc", optarg);
            if (min_alloc == 0)
                usage_error("--min-alloc must be at least 1");
            break;
        case O_COW: cow = true; break;
        case O_PIPELINE: pipeline = optarg; break;
        case O_MAX_RESIDENT:
            max_resident = opt_size("max-resident", optarg);
            if (max_resident == 0)
                usage_error("--max-resident must be greater than 0");
            break;
        case O_PULL: pull = opt_uint("pull-workers", optarg, 1024); break;
        case O_PUSH: push = opt_uint("push-workers", optarg, 1024); break;
        case O_FAULT: fault = opt_uint("fault-threads", optarg, 256); break;
        case O_INTERVAL:
            interval = optarg;
            interval_ms = opt_duration("push-interval", optarg);
            break;
        case O_SYNC_TIMEOUT: sync_timeout_ms = opt_duration("sync-timeout", optarg); break;
        case O_PREFETCH: prefetch = optarg; break;
        case O_RECORD:
            if (!*optarg)
                usage_error("--record-access needs a file name");
            record = optarg;
            break;
        case O_STATS: stats = true; break;
        case O_PROBE: probe = true; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("r3run (r3) %s\n", PACKAGE_VERSION); return 0;
        default:
            if (optopt && optopt < 256)
                usage_error("unknown option -%c", optopt);
            else if (optopt)
                usage_error("%s needs a value", argv[optind - 1]);
            else
                usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    if (probe) {
        /* What a region opened by r3run would use here, with the switches
         * of this environment (the shim reads the same variables). */
        struct r3_preload_env pe;
        struct r3_region_opts o;
        r3_region_opts_init(&o);
        if (!getenv("R3_SOURCE"))
            setenv("R3_SOURCE", "mem:", 1);   /* only the switches matter here */
        if (r3_preload_env_parse(&pe) == 0)
            r3_preload_env_opts(&pe, &o);
        struct r3_probe p;
        r3_probe(&p, o.workdir);
        r3_probe_print(stdout, &p, &o);
        return 0;
    }
    if (optind >= argc)
        usage_error("no program to run");

    char *prog = resolve(argv[optind]);
    check_program(prog, 0);
    const struct r3_strategy_ops *st = r3_strategy_find(strategy);
    if (!st) {
        char names[256] = "";
        for (const struct r3_strategy_ops *const *s = r3_strategy_list(); *s; s++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
                     names[0] ? ", " : "", (*s)->name);
        usage_error("unknown strategy '%s' (this build has: %s)", strategy, names[0] ? names : "none");
    }
    if (cow && !(st->caps & R3_STRATEGY_COPY_ON_WRITE))
        usage_error("--copy-on-write: the %s strategy cannot keep writes local (the uffd strategy"
                    " can)", strategy);
    if (max_resident && strcmp(strategy, "uffd") != 0)
        usage_error("--max-resident: the %s strategy cannot evict (the uffd strategy can)", strategy);
    if (max_resident && cow)
        usage_error("--max-resident cannot be used with --copy-on-write (evicted writes would be lost)");
    if (max_resident) {
        /* The same minimum the region checks: the chunks in flight at once. */
        const char *ra = getenv("R3_UFFD_READAHEAD");
        uint64_t min = (fault ? fault : 2) * ((ra && *ra ? strtoull(ra, NULL, 10) : 16) + 1) + 4;
        if (max_resident / chunk < min) {
            char b1[32], b2[32];
            usage_error("--max-resident %s is too small: at least %s (%llu chunks of %llu bytes can be"
                        " in flight at once)", r3_fmt_size(max_resident, b1, sizeof b1),
                        r3_fmt_size(min * chunk, b2, sizeof b2), (unsigned long long)min,
                        (unsigned long long)chunk);
        }
    }
    if (have_size && size % chunk)
        usage_error("--size %llu is not a multiple of the chunk (%llu)", (unsigned long long)size,
                    (unsigned long long)chunk);
    if (keep && source)
        usage_error("--keep-image is about the default image; --source %s is kept anyway", source);
    int pf = R3_PREFETCH_SEQUENTIAL;
    const char *pf_file = NULL;
    if (prefetch) {
        if (r3_preload_prefetch_parse(prefetch, record, &pf, &pf_file) < 0)
            usage_error("--prefetch: %s", r3_last_error());
        if (pf_file && access(pf_file, R_OK) < 0) {
            if (strcmp(prefetch, "hot") == 0 && errno == ENOENT)
                prefetch = "sequential";      /* first run: nothing recorded yet */
            else
                die("--prefetch %s: cannot read the access log: %s", pf_file, strerror(errno));
        }
    }

    /* Open the source once here, so a bad URI, an unreachable server, a
     * read-only source or one smaller than the region is reported before
     * the program starts. */
    char *image = NULL;
    if (source) {
        struct r3_source *src;
        if (r3_source_open(source, &src) < 0)
            die("cannot open the source %s: %s", source, r3_last_error());
        if (pipeline) {               /* a bad spec is said before the program starts */
            struct r3_pipeline *pl;
            if (r3_pipeline_parse(pipeline, src, &pl) < 0)
                usage_error("--pipeline: %s", r3_last_error());
            src = pl->top;            /* closing the top stage closes them all */
            free(pl);
        }
        uint64_t have = src->size;
        bool ro = src->flags & R3_SRC_RDONLY;
        r3_source_close(src);
        if (ro && !cow)
            die("the source is read-only; use --copy-on-write to keep writes local (%s)", source);
        if (have_size && have < size)
            die("the source %s holds %llu bytes, less than --size %llu", source,
                (unsigned long long)have, (unsigned long long)size);
        if (!have_size && have % chunk)
            die("the source %s holds %llu bytes, not a multiple of the chunk (%llu); give --size",
                source, (unsigned long long)have, (unsigned long long)chunk);
    }

    if (pipeline && !source) {        /* the spec's grammar, before the default image exists */
        struct r3_source *m;
        struct r3_pipeline *pl;
        if (r3_source_open("mem:?size=16M", &m) < 0)
            die("%s", r3_last_error());
        if (r3_pipeline_parse(pipeline, m, &pl) < 0)
            usage_error("--pipeline: %s", r3_last_error());
        r3_pipeline_close(pl);
    }

    char *shim = find_shim();
    if (strpbrk(shim, ": "))
        die("the shim's path %s contains ':' or a space, which LD_PRELOAD cannot carry", shim);

    if (!source) {
        if (!have_size)
            size = opt_size("size", DEFAULT_SIZE);
        have_size = true;
        source = default_image(size, &image);
        char b[32];
        fprintf(stderr, "r3run: no --source: the region is backed by a sparse %s image %s, %s\n",
                r3_fmt_size(size, b, sizeof b), image,
                keep ? "kept after the program exits (--keep-image)" : "removed at exit");
    }

    for (int i = 0; managed[i]; i++)
        unsetenv(managed[i]);
    setenv("R3_SOURCE", source, 1);
    setenv("R3_STRATEGY", strategy, 1);
    if (have_size)
        setenv_u("R3_SIZE", size);
    setenv_u("R3_CHUNK", chunk);
    setenv_u("R3_MIN_ALLOC", min_alloc);
    setenv_u("R3_PULL_WORKERS", pull);
    setenv_u("R3_PUSH_WORKERS", push);
    setenv_u("R3_FAULT_THREADS", fault);
    char b[32];
    if (interval) {
        snprintf(b, sizeof b, "%llums", (unsigned long long)interval_ms);
        setenv("R3_PUSH_INTERVAL", b, 1);
    }
    snprintf(b, sizeof b, "%llums", (unsigned long long)sync_timeout_ms);
    setenv("R3_SYNC_TIMEOUT", b, 1);
    if (cow)
        setenv("R3_COPY_ON_WRITE", "1", 1);
    if (pipeline)
        setenv("R3_PIPELINE", pipeline, 1);
    if (max_resident)
        setenv_u("R3_MAX_RESIDENT", max_resident);
    if (image && !keep)
        setenv("R3_UNLINK_SOURCE", image, 1);   /* the shim unlinks it once open */
    if (prefetch)
        setenv("R3_PREFETCH", prefetch, 1);
    if (record)
        setenv("R3_RECORD_ACCESS", record, 1);
    if (stats)
        setenv("R3_STATS", "1", 1);
    setenv_u("R3_PID", (uint64_t)getpid());     /* exec keeps the pid */
    const char *old = getenv("LD_PRELOAD");
    char *pre;
    if (asprintf(&pre, "%s%s%s", shim, old && *old ? ":" : "", old ? old : "") < 0)
        die("out of memory");
    setenv("LD_PRELOAD", pre, 1);

    fflush(NULL);
    execv(prog, argv + optind);
    int e = errno;
    if (image && !keep)
        unlink(image);
    fprintf(stderr, "r3run: cannot run %s: %s\n", prog, strerror(e));
    return e == ENOENT ? 127 : 126;
}
