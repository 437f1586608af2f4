/* oci_fast.c - supervisor-oci's native front end: the calls containerd makes most, without Python.
 *
 * Theory of operation. `supervisor-oci install-fast DEST` copies this program to DEST with the path
 * of the Python that installed it written into `python_path` below (after its marker). DEST is then
 * what containerd's BinaryName names. It answers start, state, kill (a signal number, one process),
 * delete, pause, resume and `ps --format json` itself, from `ROOT/ID/fast`, which `create` writes
 * beside state.json; everything else, and every case it is not sure of (a flag it does not know, a
 * container with hooks, no `fast` file), it hands to the Python implementation by exec'ing
 * `PYTHON -m supervisor.oci` with the same arguments. Errors use runc's wording, on stderr and as a
 * JSON line in --log, like the Python side.
 *
 * ROOT/ID/fast holds one item a line: `pid N`, `start N` (the init's start time in /proc/PID/stat,
 * against pid reuse), `hooks 0|1`, `cgroup DIR` (repeated), and last `json TEXT`: the state
 * document's fields other than pid and status, as the text that follows the opening brace.
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

#define MARKER "SUPERVISOR-OCI-PYTHON:"
/* volatile: the compiler must read what install-fast wrote, not the initializer it saw */
static volatile char python_path[4096] = MARKER;

#define MAX_CGROUPS 16

static const char *log_path, *log_format = "text";
static char **saved_argv;

struct fast {
    long pid;
    unsigned long long start;
    int hooks;
    char cgroups[MAX_CGROUPS][512];
    int n_cgroups;
    char json[16384];
};

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
    argv[0] = (char *)python;
    argv[1] = "-m";
    argv[2] = "supervisor.oci";
    for (int i = 1; i < argc; i++)
        argv[i + 2] = saved_argv[i];
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

/* What does not fit is the Python side's to handle. */
static void copy_field(char *out, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        fall_back();
    memcpy(out, src, n + 1);
}

/* Reads ROOT/ID/fast; falls back to Python when there is none but state.json exists. */
static void load(const char *dir, struct fast *st)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/fast", dir);
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(path, sizeof(path), "%s/state.json", dir);
        if (access(path, F_OK) == 0)
            fall_back();
        fail("container does not exist");
    }
    memset(st, 0, sizeof(*st));
    static char line[20000];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "pid ", 4) == 0)
            st->pid = strtol(line + 4, NULL, 10);
        else if (strncmp(line, "start ", 6) == 0)
            st->start = strtoull(line + 6, NULL, 10);
        else if (strncmp(line, "hooks ", 6) == 0)
            st->hooks = atoi(line + 6);
        else if (strncmp(line, "cgroup ", 7) == 0 && st->n_cgroups < MAX_CGROUPS)
            copy_field(st->cgroups[st->n_cgroups++], sizeof(st->cgroups[0]), line + 7);
        else if (strncmp(line, "json ", 5) == 0)
            copy_field(st->json, sizeof(st->json), line + 5);
    }
    fclose(f);
    if (st->hooks)
        fall_back();
}

/* The init still runs and is ours: its start time matches, and it is no zombie. */
static int alive(const struct fast *st)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", st->pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return 0;
    p += 2;
    char state = *p;
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p, ' ');
        if (p)
            p++;
    }
    return p && strtoull(p, NULL, 10) == st->start && state != 'Z' && state != 'X';
}

static int cgroup_file(const struct fast *st, const char *name, char *out, size_t size)
{
    for (int i = 0; i < st->n_cgroups; i++) {
        snprintf(out, size, "%s/%s", st->cgroups[i], name);
        if (access(out, F_OK) == 0)
            return 1;
    }
    return 0;
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

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

static int frozen(const struct fast *st)
{
    char path[1024], buf[64];
    if (!cgroup_file(st, "freezer.state", path, sizeof(path)) && !cgroup_file(st, "cgroup.freeze", path, sizeof(path)))
        return 0;
    if (read_file(path, buf, sizeof(buf)) < 0)
        return 0;
    return strncmp(buf, "FROZEN", 6) == 0 || strncmp(buf, "FREEZING", 8) == 0 || buf[0] == '1';
}

static const char *status(const char *dir, const struct fast *st)
{
    if (!alive(st))
        return "stopped";
    if (frozen(st))
        return "paused";
    char fifo[4096];
    snprintf(fifo, sizeof(fifo), "%s/exec.fifo", dir);
    return access(fifo, F_OK) == 0 ? "created" : "running";
}

static int pidfd_of(const struct fast *st)
{
    int fd = (int)syscall(SYS_pidfd_open, (pid_t)st->pid, 0);
    if (fd >= 0 && !alive(st)) {
        close(fd);
        return -1;
    }
    return fd;
}

static void cmd_state(const char *dir, const struct fast *st)
{
    const char *s = status(dir, st);
    printf("{\"pid\": %ld, \"status\": \"%s\", %s\n", strcmp(s, "stopped") ? st->pid : 0L, s, st->json);
}

static void cmd_start(const char *dir, const struct fast *st)
{
    const char *s = status(dir, st);
    if (strcmp(s, "stopped") == 0)
        fail("cannot start a container that has stopped");
    if (strcmp(s, "created") != 0)
        fail("cannot start an already running container");
    int pidfd = pidfd_of(st);
    if (pidfd < 0)
        fail("cannot start a container that has stopped");
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

static void cmd_kill(const struct fast *st, const char *sigtext)
{
    char *end;
    long sig = strtol(sigtext, &end, 10);
    if (*end || sig <= 0 || sig > 64)
        fall_back(); /* a signal by name: Python knows the names */
    int pidfd = pidfd_of(st);
    if (pidfd < 0)
        fail("container not running");
    if (syscall(SYS_pidfd_send_signal, pidfd, (int)sig, NULL, 0) < 0)
        fail(errno == ESRCH ? "container not running" : "kill: %s", strerror(errno));
    close(pidfd);
    if (sig == SIGKILL && frozen(st))
        fall_back(); /* a frozen process dies once thawed: let the full path do it */
}

static void remove_state(const char *dir, const struct fast *st)
{
    for (int i = 0; i < st->n_cgroups; i++) {
        for (int attempt = 0; rmdir(st->cgroups[i]) < 0 && errno != ENOENT; attempt++) {
            if ((errno != EBUSY && errno != ENOTEMPTY) || attempt == 99)
                fail("removing cgroup %s: %s", st->cgroups[i], strerror(errno));
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
        }
    }
    static const char *names[] = {"fast", "exec.fifo", "state.json.tmp", "state.json"};
    char path[4096];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static int cgroup_procs(const struct fast *st, long *pids, int max)
{
    char path[1024];
    static char buf[65536];
    if (!cgroup_file(st, "cgroup.procs", path, sizeof(path)) || read_file(path, buf, sizeof(buf)) < 0)
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

static void cmd_delete(const char *dir, const char *id, const struct fast *st, int force)
{
    const char *s = status(dir, st);
    long pids[4096];
    int n = cgroup_procs(st, pids, 4096);
    if (strcmp(s, "stopped") != 0 || n > 0) {
        if (strcmp(s, "stopped") != 0 && !force)
            fail("cannot delete container %s that is not stopped: %s", id, s);
        if (frozen(st) || n > 1)
            fall_back(); /* the freezer dance for many processes is the Python side's */
        int pidfd = pidfd_of(st);
        if (pidfd >= 0) {
            syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
            struct pollfd p = {.fd = pidfd, .events = POLLIN};
            poll(&p, 1, 10000);
            close(pidfd);
        } else {
            for (int i = 0; i < n; i++)
                kill((pid_t)pids[i], SIGKILL);
        }
    }
    remove_state(dir, st);
}

static void cmd_freeze(const char *dir, const struct fast *st, int freeze)
{
    const char *s = status(dir, st);
    if (freeze && strcmp(s, "running") && strcmp(s, "created"))
        fail("container not running");
    if (!freeze && strcmp(s, "paused"))
        fail("container not paused");
    char path[1024], buf[64];
    if (cgroup_file(st, "freezer.state", path, sizeof(path))) {
        const char *want = freeze ? "FROZEN" : "THAWED";
        for (int i = 0; i < 1000; i++) {
            if (write_file(path, want) < 0)
                fail("freezer: %s", strerror(errno));
            if (read_file(path, buf, sizeof(buf)) == 0 && strncmp(buf, want, strlen(want)) == 0)
                return;
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        fail("the freezer did not reach %s", want);
    }
    if (cgroup_file(st, "cgroup.freeze", path, sizeof(path))) {
        if (write_file(path, freeze ? "1" : "0") < 0)
            fail("freezer: %s", strerror(errno));
        return;
    }
    fail("cannot pause: the container has no freezer cgroup");
}

static void cmd_ps(const char *dir, const struct fast *st)
{
    long pids[4096];
    int n = cgroup_procs(st, pids, 4096);
    if (n == 0 && strcmp(status(dir, st), "stopped") == 0)
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
    int i = 1;
    /* global flags: the ones containerd passes; anything else is the Python side's */
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i] + (argv[i][1] == '-' ? 2 : 1);
        if (strcmp(a, "root") == 0 && i + 1 < argc)
            root = argv[++i];
        else if (strcmp(a, "log") == 0 && i + 1 < argc)
            log_path = argv[++i];
        else if (strcmp(a, "log-format") == 0 && i + 1 < argc)
            log_format = argv[++i];
        else
            fall_back();
    }
    if (i >= argc || root == NULL || (strcmp(log_format, "json") && strcmp(log_format, "text")))
        fall_back();
    const char *cmd = argv[i++];
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
    struct fast st;
    if (strcmp(cmd, "delete") == 0 && force) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/state.json", dir);
        if (access(path, F_OK) < 0) {
            snprintf(path, sizeof(path), "%s/fast", dir);
            if (access(path, F_OK) < 0)
                return 0; /* runc: deleting what is not there, forcefully, is done */
        }
    }
    load(dir, &st);
    if (strcmp(cmd, "state") == 0)
        cmd_state(dir, &st);
    else if (strcmp(cmd, "start") == 0)
        cmd_start(dir, &st);
    else if (is_kill)
        cmd_kill(&st, rest == 2 ? argv[i + 1] : "15");
    else if (strcmp(cmd, "delete") == 0)
        cmd_delete(dir, id, &st, force);
    else if (strcmp(cmd, "pause") == 0)
        cmd_freeze(dir, &st, 1);
    else if (strcmp(cmd, "resume") == 0)
        cmd_freeze(dir, &st, 0);
    else
        cmd_ps(dir, &st);
    return 0;
}
