/* oci_fast.c - supervisor-oci's native front end: the calls containerd makes most, without Python.
 *
 * Theory of operation. `supervisor-oci install-fast DEST` copies this program to DEST with the path
 * of the Python that installed it written into `python_path` below (after its marker). DEST is then
 * what containerd's BinaryName names. It answers start, state, kill (a signal number, one process),
 * delete, pause, resume and `ps --format json` itself, from `ROOT/ID/fast`, which `create` writes
 * beside state.json; everything else, and every case it is not sure of (a flag it does not know, a
 * container with hooks, no `fast` file, one that does not parse whole), it hands to the Python
 * implementation by exec'ing `PYTHON -P -c 'from supervisor.oci.main import entry; entry()'` with
 * the same arguments. `create` it first offers to a planner serving ROOT (oci_call.c), a warm
 * Python process that plans it and has us spawn the bootstrap; without one, Python as above. Errors use runc's
 * wording, on stderr and as a JSON line in --log, like the Python side.
 *
 * ROOT/ID/fast is a record in the bootstrap message's encoding (oci_record.h, parsed by
 * oci_record.c with nla.c's walker, strictly, within its bytes): no text is parsed here but what the
 * kernel writes (/proc/PID/stat, cgroup files). Python made every choice in it: which cgroup
 * directories there are, which of them freezes (v1 `freezer.state`, or v2 `cgroup.freeze` and
 * `cgroup.events`), and the state document's fixed fields, which `state` copies out as they are. A
 * record of another format, an older text file, a truncated or garbled one: refused, and Python
 * (which reads state.json) answers.
 *
 * The init is known by its pid and its start time. Every call opens a pidfd for the pid first and
 * then checks the start time (and that it is no zombie): a pidfd never follows a pid number to
 * another process, so once the check passed, what the call signals or waits for through that pidfd
 * is the init, even if the kernel gave its pid to a new process meanwhile. A pid read from
 * cgroup.procs is signalled the same way: pidfd first, then still a member.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "oci_planner.h"
#include "oci_record.h"

#define MARKER "SUPERVISOR-OCI-PYTHON:"
/* volatile: the compiler must read what install-fast wrote, not the initializer it saw */
static volatile char python_path[4096] = MARKER;

static const char *log_path, *log_format = "text";
static char **saved_argv;

__attribute__((noreturn))
static void fall_back(void)
{
    const char *python = (const char *)python_path + strlen(MARKER);
    int argc = 0;
    while (saved_argv[argc])
        argc++;
    char **argv = calloc((size_t)argc + 4, sizeof(char *));
    if (argv == NULL || python[0] != '/') {
        fprintf(stderr, "supervisor-oci: this copy was not made by `supervisor-oci install-fast`\n");
        _exit(1);
    }
    /* -P: `-c` would put the working directory first on sys.path, and the shim runs us in the
     * bundle's directory: a `supervisor` there must not be what runs. -c rather than -m: runpy's
     * imports cost every call handed over about 8 ms. */
    argv[0] = (char *)python;
    argv[1] = "-P";
    argv[2] = "-c";
    argv[3] = "from supervisor.oci.main import entry; entry()";
    for (int i = 1; i < argc; i++)
        argv[i + 3] = saved_argv[i];
    execv(python, argv);
    fprintf(stderr, "supervisor-oci: exec %s: %s\n", python, strerror(errno));
    _exit(1);
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

__attribute__((noreturn, format(printf, 1, 2)))
static void fail(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", msg);
    if (log_path) {
        FILE *f = fopen(log_path, "ae");
        if (f) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            struct tm tm;
            gmtime_r(&ts.tv_sec, &tm);
            char stamp[64];
            snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec);
            if (strcmp(log_format, "json") == 0) {
                fputs("{\"level\": \"error\", \"msg\": ", f);
                json_string(f, msg);
                fprintf(f, ", \"time\": \"%s\"}\n", stamp);
            } else {
                fprintf(f, "time=\"%s\" level=error msg=", stamp);
                json_string(f, msg);
                fputc('\n', f);
            }
            fclose(f);
        }
    }
    exit(1);
}

static int valid_id(const char *id)
{
    if (!*id || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("_+-.", *p)))
            return 0;
    return 1;
}

/* Reads ROOT/ID/fast into `r` (which points into a static buffer). No record but a state.json: a
 * container of the Python side's (an older version's, or one whose record could not be written); a
 * record that does not parse whole: the same. A container with hooks is the Python side's too. */
static void load(const char *dir, struct sv_oci_record *r)
{
    static uint8_t buf[SV_OCI_MAX_RECORD + 1] __attribute__((aligned(8)));
    char path[4096];
    snprintf(path, sizeof(path), "%s/fast", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(path, sizeof(path), "%s/state.json", dir);
        if (access(path, F_OK) == 0)
            fall_back();
        fail("container does not exist");
    }
    size_t len = 0;
    ssize_t n;
    do {
        n = read(fd, buf + len, sizeof(buf) - len);
        if (n > 0)
            len += (size_t)n;
    } while ((n > 0 && len < sizeof(buf)) || (n < 0 && errno == EINTR));
    close(fd);
    char err[256];
    /* a file longer than the limit fills buf: sv_oci_parse refuses it */
    if (n < 0 || sv_oci_parse(buf, len, r, err, sizeof(err)) < 0 || r->hooks)
        fall_back();
}

/* The process with the init's pid is the init (its start time matches) and still runs (no zombie).
 * By itself this proves nothing a moment later; see open_init. */
static int alive(const struct sv_oci_record *r)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%u/stat", r->pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return 0;
    p += 2;
    char state = *p;
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p, ' ');
        if (p)
            p++;
    }
    return p && strtoull(p, NULL, 10) == r->start && state != 'Z' && state != 'X';
}

/* A pidfd of the init, or -1 when it is gone. Opened first, then checked: the pidfd pins one
 * process, so if the start time matches after it was opened, the pidfd is the init's, whatever
 * happens to the pid number later. */
static int open_init(const struct sv_oci_record *r)
{
    int fd = (int)syscall(SYS_pidfd_open, (pid_t)r->pid, 0);
    if (fd >= 0 && !alive(r)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int read_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return 0;
}

/* DIR/NAME into buf, NUL-terminated (cut to fit). */
static int read_in(const char *dir, const char *name, char *buf, size_t size)
{
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
        return -1;
    return read_file(path, buf, size);
}

static int write_in(const char *dir, const char *name, const char *text)
{
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* `line` is one of the lines of `text` (a cgroup file: "key value" lines, or one word). */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; *p;) {
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return 1;
        const char *next = strchr(p, '\n');
        if (next == NULL)
            break;
        p = next + 1;
    }
    return 0;
}

/* As Container.frozen: v1 freezer.state FROZEN or FREEZING; v2 cgroup.freeze 1 (asked), or
 * "frozen 1" in cgroup.events (the effective state, which a frozen ancestor sets too). */
static int frozen(const struct sv_oci_record *r)
{
    char buf[256];
    if (r->freezer_version == 1)
        return read_in(r->freezer, "freezer.state", buf, sizeof(buf)) == 0 &&
               (has_line(buf, "FROZEN") || has_line(buf, "FREEZING"));
    if (r->freezer_version == 2)
        return (read_in(r->freezer, "cgroup.freeze", buf, sizeof(buf)) == 0 && has_line(buf, "1")) ||
               (read_in(r->freezer, "cgroup.events", buf, sizeof(buf)) == 0 && has_line(buf, "frozen 1"));
    return 0;
}

/* The status, decided on the init behind a pidfd (see open_init). With `pidfd`, a status other than
 * "stopped" leaves that pidfd there for the caller to act through; else it is -1. */
static const char *status(const char *dir, const struct sv_oci_record *r, int *pidfd)
{
    int fd = open_init(r);
    if (pidfd)
        *pidfd = fd;
    else if (fd >= 0)
        close(fd);
    if (fd < 0)
        return "stopped";
    if (frozen(r))
        return "paused";
    char fifo[4096];
    snprintf(fifo, sizeof(fifo), "%s/exec.fifo", dir);
    return access(fifo, F_OK) == 0 ? "created" : "running";
}

static void cmd_state(const char *dir, const struct sv_oci_record *r)
{
    if (r->state == NULL)
        fall_back(); /* the state document did not fit the record */
    const char *s = status(dir, r, NULL);
    printf("{\"pid\": %u, \"status\": \"%s\", ", strcmp(s, "stopped") ? r->pid : 0u, s);
    fwrite(r->state, 1, r->state_len, stdout);
    putchar('\n');
}

static void cmd_start(const char *dir, const struct sv_oci_record *r)
{
    int pidfd;
    const char *s = status(dir, r, &pidfd);
    if (strcmp(s, "stopped") == 0)
        fail("cannot start a container that has stopped");
    if (strcmp(s, "created") != 0)
        fail("cannot start an already running container");
    char fifo[4096];
    snprintf(fifo, sizeof(fifo), "%s/exec.fifo", dir);
    int fd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        fail("cannot start an already running container");
    /* The init's blocked open for writing returns now; it writes one byte, then execs. */
    for (;;) {
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = pidfd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            fail("poll: %s", strerror(errno));
        }
        if (p[0].revents & POLLIN) {
            char c;
            ssize_t n = read(fd, &c, 1);
            if (n == 1 && c == '0')
                break;
            if (n < 0 && errno == EAGAIN)
                continue;
        }
        if (p[1].revents || (p[0].revents & POLLHUP))
            fail("cannot start a container that has stopped");
    }
    close(fd);
    close(pidfd);
    unlink(fifo);
}

static void cmd_kill(const struct sv_oci_record *r, const char *sigtext)
{
    char *end;
    long sig = strtol(sigtext, &end, 10);
    if (*end || sig <= 0 || sig > 64)
        fall_back(); /* a signal by name: Python knows the names */
    int pidfd = open_init(r);
    if (pidfd < 0)
        fail("container not running");
    if (syscall(SYS_pidfd_send_signal, pidfd, (int)sig, NULL, 0) < 0)
        fail(errno == ESRCH ? "container not running" : "kill: %s", strerror(errno));
    close(pidfd);
    if (sig == SIGKILL && frozen(r))
        fall_back(); /* a frozen process dies once thawed: let the full path do it */
}

static void remove_state(const char *dir, const struct sv_oci_record *r)
{
    for (size_t i = 0; i < r->n_cgroups; i++) {
        for (int attempt = 0; rmdir(r->cgroups[i]) < 0 && errno != ENOENT; attempt++) {
            if ((errno != EBUSY && errno != ENOTEMPTY) || attempt == 99)
                fail("removing cgroup %s: %s", r->cgroups[i], strerror(errno));
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
        }
    }
    static const char *names[] = {"fast", "fast.tmp", "exec.fifo", "state.json.tmp", "state.json"};
    char path[4096];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* The pids in the container's cgroup (from the first directory that has cgroup.procs). */
static int cgroup_procs(const struct sv_oci_record *r, long *pids, int max)
{
    static char buf[65536];
    size_t i = 0;
    while (i < r->n_cgroups && read_in(r->cgroups[i], "cgroup.procs", buf, sizeof(buf)) < 0)
        i++;
    if (i == r->n_cgroups)
        return 0;
    int n = 0;
    for (char *p = buf; *p && n < max;) {
        char *end;
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        pids[n++] = pid;
        p = end;
    }
    return n;
}

/* SIGKILL to a process of the container's cgroup: a pidfd first, then the pid must still be in the
 * cgroup, so a number that passed to another process meanwhile is not signalled. */
static void kill_member(const struct sv_oci_record *r, long pid)
{
    int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
    if (fd < 0)
        return; /* gone already */
    long now[4096];
    int n = cgroup_procs(r, now, 4096);
    for (int i = 0; i < n; i++) {
        if (now[i] == pid) {
            syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0);
            break;
        }
    }
    close(fd);
}

static void cmd_delete(const char *dir, const char *id, const struct sv_oci_record *r, int force)
{
    int pidfd;
    const char *s = status(dir, r, &pidfd);
    long pids[4096];
    int n = cgroup_procs(r, pids, 4096);
    if (strcmp(s, "stopped") != 0 || n > 0) {
        if (strcmp(s, "stopped") != 0 && !force)
            fail("cannot delete container %s that is not stopped: %s", id, s);
        if (frozen(r) || n > 1)
            fall_back(); /* the freezer dance for many processes is the Python side's */
        if (pidfd >= 0) {
            syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
            struct pollfd p = {.fd = pidfd, .events = POLLIN};
            poll(&p, 1, 10000);
            close(pidfd);
        } else {
            kill_member(r, pids[0]); /* what outlived an init that shared its pid namespace */
        }
    }
    remove_state(dir, r);
}

static void cmd_freeze(const char *dir, const struct sv_oci_record *r, int freeze)
{
    const char *s = status(dir, r, NULL);
    if (freeze && strcmp(s, "running") && strcmp(s, "created"))
        fail("container not running");
    if (!freeze && strcmp(s, "paused"))
        fail("container not paused");
    if (r->freezer_version == 1) {
        const char *want = freeze ? "FROZEN" : "THAWED";
        char buf[64];
        for (int i = 0; i < 1000; i++) {
            if (write_in(r->freezer, "freezer.state", want) < 0)
                fail("freezer: %s", strerror(errno));
            if (read_in(r->freezer, "freezer.state", buf, sizeof(buf)) == 0 && has_line(buf, want))
                return;
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        fail("the freezer did not reach %s", want);
    }
    if (r->freezer_version == 2) {
        if (write_in(r->freezer, "cgroup.freeze", freeze ? "1" : "0") < 0)
            fail("freezer: %s", strerror(errno));
        return;
    }
    fail("cannot pause: the container has no freezer cgroup");
}

static void cmd_ps(const char *dir, const struct sv_oci_record *r)
{
    long pids[4096];
    int n = cgroup_procs(r, pids, 4096);
    if (n == 0 && strcmp(status(dir, r, NULL), "stopped") == 0)
        fail("container not running");
    putchar('[');
    for (int i = 0; i < n; i++)
        printf(i ? ", %ld" : "%ld", pids[i]);
    puts("]");
}

int main(int argc, char **argv)
{
    saved_argv = argv;
    const char *root = NULL;
    int i = 1, other_flags = 0;
    /* global flags: the ones containerd passes; anything else is the Python side's */
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i] + (argv[i][1] == '-' ? 2 : 1);
        if (strcmp(a, "root") == 0 && i + 1 < argc)
            root = argv[++i];
        else if (strcmp(a, "log") == 0 && i + 1 < argc)
            log_path = argv[++i];
        else if (strcmp(a, "log-format") == 0 && i + 1 < argc)
            log_format = argv[++i];
        else if (strcmp(a, "systemd-cgroup") == 0 || strcmp(a, "debug") == 0)
            other_flags = 1; /* the planner's to read, or Python's */
        else
            fall_back();
    }
    if (i >= argc || root == NULL || (strcmp(log_format, "json") && strcmp(log_format, "text")))
        fall_back();
    const char *cmd = argv[i++];
    if (strcmp(cmd, "create") == 0) {
        /* planning is Python's: a planner's warm one (oci_planner.h) if one serves ROOT, else a new
         * Python process's */
        int code;
        char err[512];
        int r = sv_plan_call(root, argv, &code, err, sizeof(err));
        if (r == 1)
            return code;
        if (r < 0)
            fail("%s", err);
        fall_back();
    }
    if (other_flags)
        fall_back();
    int force = 0, json = 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i] + (argv[i][1] == '-' ? 2 : 1);
        if (strcmp(cmd, "delete") == 0 && (strcmp(a, "force") == 0 || strcmp(a, "f") == 0))
            force = 1;
        else if (strcmp(cmd, "ps") == 0 && (strcmp(a, "format") == 0 || strcmp(a, "f") == 0) && i + 1 < argc &&
                 strcmp(argv[i + 1], "json") == 0)
            json = 1, i++;
        else
            fall_back();
    }
    int rest = argc - i;
    int known = strcmp(cmd, "state") == 0 || strcmp(cmd, "start") == 0 || strcmp(cmd, "delete") == 0 ||
                strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0 || (strcmp(cmd, "ps") == 0 && json);
    int is_kill = strcmp(cmd, "kill") == 0;
    if (!((known && rest == 1) || (is_kill && (rest == 1 || rest == 2))))
        fall_back();
    const char *id = argv[i];
    if (!valid_id(id))
        fail("invalid id format: %s", id);
    char dir[3072];
    if (snprintf(dir, sizeof(dir), "%s/%s", root, id) >= (int)sizeof(dir))
        fall_back();
    struct sv_oci_record rec;
    if (strcmp(cmd, "delete") == 0 && force) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/state.json", dir);
        if (access(path, F_OK) < 0) {
            snprintf(path, sizeof(path), "%s/fast", dir);
            if (access(path, F_OK) < 0)
                return 0; /* runc: deleting what is not there, forcefully, is done */
        }
    }
    load(dir, &rec);
    if (strcmp(cmd, "state") == 0)
        cmd_state(dir, &rec);
    else if (strcmp(cmd, "start") == 0)
        cmd_start(dir, &rec);
    else if (is_kill)
        cmd_kill(&rec, rest == 2 ? argv[i + 1] : "15");
    else if (strcmp(cmd, "delete") == 0)
        cmd_delete(dir, id, &rec, force);
    else if (strcmp(cmd, "pause") == 0)
        cmd_freeze(dir, &rec, 1);
    else if (strcmp(cmd, "resume") == 0)
        cmd_freeze(dir, &rec, 0);
    else
        cmd_ps(dir, &rec);
    return 0;
}
