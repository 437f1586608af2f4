/* hooks.c - the runtime spec's hooks that run inside the container: createContainer and startContainer.
 *
 * Theory of operation. The init runs each hook as a child of its own, so the hook is in every
 * namespace of the container. Where and with what (the planner and init.c choose the points, as runc
 * does):
 *   - createContainer: at the SV_OP_HOOKS step, which the planner puts after the mounts and /dev and
 *     before pivot_root. The old root is still there, so the path resolves in the host's view; the
 *     hook runs with every privilege the init holds (no seccomp, no no_new_privs, full capabilities,
 *     root of the container's user namespace), umask 022, its cwd the container's root.
 *   - startContainer: once started (after `start` opened the exec FIFO, or just before the EXEC
 *     announcement without one), so after pivot_root: the path resolves in the container. It runs
 *     with the workload's credentials, capabilities, no_new_privs and seccomp filter.
 * Each hook gets the state JSON on stdin (the planner's text with our pid written where it goes: the
 * pid as the container sees it, the runtime spec's rule for hooks run in the container namespace),
 * its planned argv and envp, one pipe for stdout and stderr (the first bytes of which go into the
 * error), and no other descriptor of ours. Past its timeout it is killed (SIGKILL) and reaped. A hook
 * that could not be exec'd, exited non-zero, was killed or timed out is an SV_STAGE_HOOK record: the
 * supervisor words it. The init only formats the pid's digits; it parses nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bootstrap.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define OUTPUT_KEPT 1024    /* what of a failed hook's output goes into its record */
#define PATH_KEPT 2048      /* what of its path */

/* The state document: HEAD, our pid, TAIL. */
static char *state_text(const char *head, const char *tail, size_t *len)
{
    char pid[24];
    int n = snprintf(pid, sizeof(pid), "%ld", syscall(SYS_getpid));
    size_t h = strlen(head), t = strlen(tail);
    char *s = malloc(h + (size_t)n + t + 1);
    if (s == NULL)
        sv_fail(ENOMEM, "hook state", "%zu bytes", h + t);
    memcpy(s, head, h);
    memcpy(s + h, pid, (size_t)n);
    memcpy(s + h + (size_t)n, tail, t + 1);
    *len = h + (size_t)n + t;
    return s;
}

__attribute__((noreturn))
static void hook_failed(const char *point, const struct sv_hook *h, size_t index, int err, int status,
                        uint32_t timed_out, const char *output, size_t output_len)
{
    struct sv_error_record rec = {SV_STAGE_HOOK, err};
    struct sv_hook_failure f = {(uint32_t)index, status, timed_out};
    char buf[sizeof(rec) + 32 + PATH_KEPT + 1 + sizeof(f) + OUTPUT_KEPT];
    size_t point_len = strnlen(point, 31), path_len = strnlen(h->path, PATH_KEPT), n = 0;
    memcpy(buf, &rec, sizeof(rec));
    n += sizeof(rec);
    memcpy(buf + n, point, point_len);
    n += point_len;
    buf[n++] = '\0';
    memcpy(buf + n, h->path, path_len);
    n += path_len;
    buf[n++] = '\0';
    memcpy(buf + n, &f, sizeof(f));
    n += sizeof(f);
    if (output_len > OUTPUT_KEPT)
        output_len = OUTPUT_KEPT;
    if (output_len)
        memcpy(buf + n, output, output_len);
    n += output_len;
    sv_send(SV_SYNC_ERROR, buf, (uint32_t)n);
    _exit(1);
}

/* A close-on-exec pipe whose ends are above 0-2 (which the child fills with its stdio), even where
 * the init was started with some of them closed. */
static int pipe_above_stdio(int p[2])
{
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        if (p[i] > 2)
            continue;
        int high = fcntl(p[i], F_DUPFD_CLOEXEC, 3);
        if (high < 0)
            return -1;
        close(p[i]);
        p[i] = high;
    }
    return 0;
}

/* Every fd from FIRST on closes at execve: close_range, or one at a time where a seccomp filter (the
 * workload's, for startContainer hooks) or an old kernel refuses it. */
static void cloexec_from(int first)
{
    if (syscall(SYS_close_range, (unsigned)first, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return;
    struct rlimit lim;
    rlim_t last = getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < 1048576 ? lim.rlim_cur : 1048576;
    for (int fd = first; (rlim_t)fd < last; fd++) {
        int flags = fcntl(fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC))
            (void)fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
}

/* The hook's side of the fork: stdio from the pipes, then execve. What fails here is written to REPORT
 * (an errno) for the init to report: the sync socket is not ours to write from this process. */
__attribute__((noreturn))
static void exec_hook(const struct sv_hook *h, int in, int out, int report, int dir_fd)
{
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGPIPE, &dfl, NULL); /* ignored by the init while it writes the state */
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
        goto fail;
    if (dir_fd >= 0 && fchdir(dir_fd) < 0)
        goto fail;
    /* 0-2 only: not the sync socket, not the fds --preserve-fds passes on to the workload. */
    cloexec_from(3);
    execve(h->path, (char *const *)h->argv, (char *const *)h->envp);
fail:;
    int err = errno;
    (void)!write(report, &err, sizeof(err));
    _exit(127);
}

static long long elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)(now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* 0 once CHILD is reaped into STATUS; -1 with errno where wait4 is refused (the workload's filter). */
static int reap(long child, int *status)
{
    for (;;) {
        if (waitpid((pid_t)child, status, 0) == (pid_t)child)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* The init cannot learn how the hook ended, or cannot end it: a failure of its own, never a loop. */
__attribute__((noreturn))
static void runner_failed(const char *op, const char *point, const struct sv_hook *h, size_t index, long child)
{
    int err = errno;
    kill((pid_t)child, SIGKILL);
    sv_fail(err, op, "%s hook #%zu (%s)", point, index, h->path);
}

/* One hook, from fork to reaping; returns only if it succeeded. */
static void run_hook(const char *point, const struct sv_hook *h, size_t index, const char *state, size_t state_len,
                     int dir_fd)
{
    int in[2], out[2], report[2];
    if (pipe_above_stdio(in) < 0 || pipe_above_stdio(out) < 0 || pipe_above_stdio(report) < 0)
        sv_fail(errno, "pipe", "%s hook #%zu", point, index);
    long child = syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, 0);
    if (child < 0)
        sv_fail(errno, "fork", "%s hook #%zu (%s)", point, index, h->path);
    if (child == 0)
        exec_hook(h, in[0], out[1], report[1], dir_fd);
    close(in[0]);
    close(out[1]);
    close(report[1]);
    int err = 0, status = 0;
    ssize_t n;
    do
        n = read(report[0], &err, sizeof(err));
    while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof(err)) { /* it never ran */
        (void)reap(child, &status);
        hook_failed(point, h, index, err, -1, 0, NULL, 0);
    }

    /* Feed stdin, keep the start of the output, and wait for the exit, the timeout or both pipes,
     * in one loop: a hook may read its state after writing a lot, or never read it. A pidfd says
     * when it exits; where that is refused (an old kernel, the workload's filter), we look every 10 ms. */
    int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)child, 0);
    int to_child = in[1], from_child = out[0];
    /* Non-blocking where the filter lets us; the loop does not count on it: it writes at most PIPE_BUF
     * once poll said there is room, reads once poll said there is something, and so never blocks. */
    fcntl(to_child, F_SETFL, O_NONBLOCK);
    fcntl(from_child, F_SETFL, O_NONBLOCK);
    char output[OUTPUT_KEPT], chunk[4096];
    size_t written = 0, kept = 0;
    uint32_t timed_out = 0;
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    for (;;) {
        struct pollfd p[3];
        nfds_t np = 0;
        int wi = -1, ri = -1, ci = -1;
        if (to_child >= 0 && written < state_len) {
            wi = (int)np;
            p[np++] = (struct pollfd){.fd = to_child, .events = POLLOUT};
        } else if (to_child >= 0) {
            close(to_child); /* all of it: the hook reads its end of file */
            to_child = -1;
        }
        if (from_child >= 0) {
            ri = (int)np;
            p[np++] = (struct pollfd){.fd = from_child, .events = POLLIN};
        }
        if (pidfd >= 0) {
            ci = (int)np;
            p[np++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
        }
        long long wait_ms = -1;
        if (h->timeout) {
            wait_ms = (long long)h->timeout * 1000 - elapsed_ms(&started);
            if (wait_ms <= 0) {
                if (kill((pid_t)child, SIGKILL) < 0)
                    runner_failed("kill", point, h, index, child);
                if (reap(child, &status) < 0)
                    runner_failed("wait4", point, h, index, child);
                timed_out = h->timeout;
                break;
            }
        }
        if (pidfd < 0 && (wait_ms < 0 || wait_ms > 10))
            wait_ms = 10;
        int r = poll(p, np, wait_ms > INT_MAX ? INT_MAX : (int)wait_ms);
        if (r < 0 && errno != EINTR)
            sv_fail(errno, "poll", "%s hook #%zu (%s)", point, index, h->path);
        if (r > 0 && wi >= 0 && p[wi].revents) {
            size_t left = state_len - written;
            ssize_t w = write(to_child, state + written, left < PIPE_BUF ? left : PIPE_BUF);
            if (w > 0)
                written += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR) { /* it closed its stdin: fine */
                close(to_child);
                to_child = -1;
            }
        }
        if (r > 0 && ri >= 0 && p[ri].revents) {
            ssize_t got = read(from_child, chunk, sizeof(chunk));
            if (got > 0 && kept < OUTPUT_KEPT) {
                size_t take = (size_t)got < OUTPUT_KEPT - kept ? (size_t)got : OUTPUT_KEPT - kept;
                memcpy(output + kept, chunk, take);
                kept += take;
            } else if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
                close(from_child);
                from_child = -1;
            }
        }
        if (ci < 0 || (r > 0 && p[ci].revents)) {
            pid_t w = waitpid((pid_t)child, &status, WNOHANG);
            if (w == (pid_t)child)
                break;
            if (w < 0 && errno != EINTR)
                runner_failed("wait4", point, h, index, child);
        }
    }
    /* What it wrote just before it ended (a process it left behind may hold the pipe: no waiting). */
    for (int i = 0; from_child >= 0 && i < 16 && kept < OUTPUT_KEPT; i++) {
        struct pollfd ready = {.fd = from_child, .events = POLLIN};
        if (poll(&ready, 1, 0) != 1)
            break;
        ssize_t got = read(from_child, output + kept, OUTPUT_KEPT - kept);
        if (got <= 0)
            break;
        kept += (size_t)got;
    }
    if (from_child >= 0)
        close(from_child);
    if (to_child >= 0)
        close(to_child);
    if (pidfd >= 0)
        close(pidfd);
    if (timed_out || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        hook_failed(point, h, index, 0, status, timed_out, output, kept);
}

void sv_run_hooks(const char *point, const struct sv_hook *hooks, size_t n, const char *head, const char *tail,
                  int dir_fd)
{
    if (n == 0)
        return;
    size_t len;
    char *state = state_text(head, tail, &len);
    /* A hook that exits without reading its state must not kill us with SIGPIPE. */
    struct sigaction ignore = {.sa_handler = SIG_IGN}, old;
    sigaction(SIGPIPE, &ignore, &old);
    for (size_t i = 0; i < n; i++)
        run_hook(point, &hooks[i], i, state, len, dir_fd);
    sigaction(SIGPIPE, &old, NULL);
    free(state);
}
