/* bootstrap.c - the executable the supervisor spawns for every container: stage 0.
 *
 * Theory of operation. The supervisor spawns this program from its main thread with one end of a
 * socketpair at the fd named in _LIBCONTAINER_INITPIPE. We
 *   0. close every descriptor we inherited but 0-2 and that socket: whatever the spawning program left
 *      inheritable (a host directory, another container's pty master) must never reach a container;
 *   1. read the bootstrap message and validate all of it (parse.c) before acting on any of it;
 *   2. set oom_score_adj (inherited by the init; done before any namespace change);
 *   3. join the namespaces given by path: every fd is opened before the first setns, since a path
 *      may not be reachable afterwards; the user namespace is joined between two passes over the
 *      others, as runc does, so both host-owned and user-namespace-owned ones can be entered;
 *   4. clone the init with CLONE_PARENT and the CLONE_NEW* flags in one call, so the init is a direct
 *      child of the supervisor (which holds a pidfd for it) and pid 1 of a new pid namespace;
 *   5. report the init's pid and exit. The supervisor reaps us.
 * The init (init.c) then waits for SV_SYNC_CONTINUE: by then the supervisor has written the uid/gid
 * maps and done the other host-side work.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bootstrap.h"

int sv_sync_fd = -1;
uint32_t sv_stage = SV_STAGE_PARSE;

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int sv_send(uint32_t type, const void *payload, uint32_t len)
{
    struct sv_sync_header h = {type, len};
    char buf[sizeof(h) + 4096];
    if (len > sizeof(buf) - sizeof(h))
        return -1;
    memcpy(buf, &h, sizeof(h));
    memcpy(buf + sizeof(h), payload, len);
    return write_all(sv_sync_fd, buf, sizeof(h) + len);
}

int sv_send_fd(uint32_t type, int fd)
{
    struct sv_sync_header h = {type, 0};
    struct iovec iov = {&h, sizeof(h)};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof(control));
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof(control.buf)};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    ssize_t n;
    do
        n = sendmsg(sv_sync_fd, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof(h) ? 0 : -1;
}

void sv_fail(int err, const char *op, const char *fmt, ...)
{
    struct sv_error_record rec = {sv_stage, err};
    char object[2048], buf[sizeof(rec) + 256 + sizeof(object)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(object, sizeof(object), fmt, ap);
    va_end(ap);
    size_t op_len = strnlen(op, 255), object_len = strlen(object);
    memcpy(buf, &rec, sizeof(rec));
    memcpy(buf + sizeof(rec), op, op_len);
    buf[sizeof(rec) + op_len] = '\0';
    memcpy(buf + sizeof(rec) + op_len + 1, object, object_len + 1);
    sv_send(SV_SYNC_ERROR, buf, (uint32_t)(sizeof(rec) + op_len + 1 + object_len + 1));
    _exit(1);
}

void sv_close_from(unsigned first, unsigned last)
{
    if (first > last)
        return;
    if (syscall(SYS_close_range, first, last, 0) == 0)
        return;
    struct rlimit lim;
    rlim_t end = getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < 1048576 ? lim.rlim_cur : 1048576;
    for (rlim_t fd = first; fd < end && fd <= last; fd++)
        close((int)fd);
}

/* Close every inherited fd but 0-2, the N that --preserve-fds passes on (3..3+N-1), and KEEP. */
static void close_inherited(int keep, unsigned preserved)
{
    unsigned first = 3 + preserved;
    if ((unsigned)keep >= first) {
        if ((unsigned)keep > first)
            sv_close_from(first, (unsigned)keep - 1);
        sv_close_from((unsigned)keep + 1, ~0U);
    } else {
        sv_close_from(first, ~0U);
    }
}

/* N of _SUPERVISOR_PRESERVE_FDS (0 without it). */
static unsigned read_preserved(void)
{
    const char *s = getenv("_SUPERVISOR_PRESERVE_FDS");
    if (s == NULL || *s == '\0')
        return 0;
    char *end;
    long n = strtol(s, &end, 10);
    if (*end != '\0' || n < 0 || n > 4096) {
        fprintf(stderr, "supervisor-bootstrap: bad _SUPERVISOR_PRESERVE_FDS \"%s\"\n", s);
        exit(2);
    }
    return (unsigned)n;
}

static int read_initpipe_fd(void)
{
    const char *s = getenv("_LIBCONTAINER_INITPIPE");
    if (s == NULL || *s == '\0') {
        fprintf(stderr, "supervisor-bootstrap: run by the supervisor only (_LIBCONTAINER_INITPIPE unset)\n");
        exit(2);
    }
    char *end;
    errno = 0;
    long fd = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || fd < 0 || fd > 65535) {
        fprintf(stderr, "supervisor-bootstrap: bad _LIBCONTAINER_INITPIPE \"%s\"\n", s);
        exit(2);
    }
    return (int)fd;
}

/* Reads one whole message: header first, for its length. */
static uint8_t *read_message(size_t *len)
{
    uint8_t hdr[16];
    if (read_all(sv_sync_fd, hdr, sizeof(hdr)) < 0)
        sv_fail(errno ? errno : EPIPE, "read bootstrap message", "header");
    uint32_t total;
    memcpy(&total, hdr, 4);
    if (total < sizeof(hdr) || total > SV_MAX_MESSAGE)
        sv_fail(EINVAL, "read bootstrap message", "length %u", total);
    uint8_t *msg = malloc(total);
    if (msg == NULL)
        sv_fail(ENOMEM, "read bootstrap message", "%u bytes", total);
    memcpy(msg, hdr, sizeof(hdr));
    if (read_all(sv_sync_fd, msg + sizeof(hdr), total - sizeof(hdr)) < 0)
        sv_fail(errno ? errno : EPIPE, "read bootstrap message", "body of %u bytes", total);
    *len = total;
    return msg;
}

static void set_oom_score_adj(int32_t value)
{
    char buf[16];
    int n = snprintf(buf, sizeof(buf), "%d", value);
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, buf, (size_t)n) != n)
        sv_fail(errno, "write", "/proc/self/oom_score_adj");
    close(fd);
}

static void join_namespaces(const struct sv_config *cfg)
{
    size_t n = cfg->n_ns_paths;
    if (n == 0)
        return;
    int fds[64];
    if (n > 64)
        sv_fail(E2BIG, "join namespaces", "%zu paths", n);
    for (size_t i = 0; i < n; i++) {
        fds[i] = open(cfg->ns_paths[i].path, O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0)
            sv_fail(errno, "open namespace", "%s", cfg->ns_paths[i].path);
    }
    /* Processes already in those namespaces must not ptrace us or open our /proc files
     * (CVE-2016-9962). */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        sv_fail(errno, "prctl", "PR_SET_DUMPABLE");
    /* Pass 1: what the host's privileges allow; pass 2: the user namespace; pass 3: the rest. */
    for (int pass = 1; pass <= 3; pass++) {
        for (size_t i = 0; i < n; i++) {
            int is_user = cfg->ns_paths[i].type == CLONE_NEWUSER;
            if (fds[i] < 0 || (pass == 2) != is_user)
                continue;
            if (setns(fds[i], (int)cfg->ns_paths[i].type) == 0) {
                close(fds[i]);
                fds[i] = -1;
            } else if (pass == 3 || is_user || errno != EPERM) {
                sv_fail(errno, "setns", "%s", cfg->ns_paths[i].path);
            }
        }
    }
}

int main(void)
{
    sv_sync_fd = read_initpipe_fd();
    close_inherited(sv_sync_fd, read_preserved());
    /* Spawned from the sealed copy as /proc/self/fd/N, we would be named "N" in ps. */
    prctl(PR_SET_NAME, "sv-bootstrap", 0, 0, 0);
    size_t len;
    uint8_t *msg = read_message(&len);
    struct sv_config cfg;
    char err[256];
    if (sv_parse(msg, len, &cfg, err, sizeof(err)) < 0)
        sv_fail(EINVAL, "parse bootstrap message", "%s", err);

    sv_stage = SV_STAGE_BOOTSTRAP;
    if (cfg.has_oom_score_adj)
        set_oom_score_adj(cfg.oom_score_adj);
    join_namespaces(&cfg);

    /* A fork-like clone: no new stack, the child returns here with 0. glibc's cached thread id is
     * stale in the child, so the init uses no pthread or raise(); it only makes raw syscalls. */
    long pid = syscall(SYS_clone, (unsigned long)(CLONE_PARENT | SIGCHLD | cfg.clone_flags), NULL, NULL, NULL, 0);
    if (pid < 0)
        sv_fail(errno, "clone", "flags 0x%x", cfg.clone_flags);
    if (pid == 0) {
        sv_stage = SV_STAGE_INIT;
        sv_run_init(&cfg);
    }
    uint32_t p = (uint32_t)pid;
    if (sv_send(SV_SYNC_PID, &p, sizeof(p)) < 0) {
        kill((pid_t)pid, SIGKILL);
        _exit(1);
    }
    _exit(0);
}
