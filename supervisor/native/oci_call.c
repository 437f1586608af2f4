/* oci_call.c - the native front end's side of the planner protocol (oci_planner.h).
 *
 * The planner plans and drives the call; this process only spawns what it is asked to, so that
 * every process of the container descends from the caller, as without the planner: the bootstrap is
 * our child, the init (cloned with CLONE_PARENT) too, and once we leave, the init is the caller's
 * subreaper's. What we send is our arguments, environment, umask, working directory and stdio:
 * everything the Python command would have read from its own process.
 *
 * Nothing here is irreversible until the planner accepts the call: one that is absent, refuses the
 * connection, or declines leaves the call to the Python command. After it, a planner that goes
 * away without DONE (killed, say) ends the call with an error, and every child we have is killed
 * and reaped, the init included: no container is half made behind the caller's back. The planner
 * reaps nothing of ours: it asks (WAIT), and we answer with the status.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "oci_planner.h"

extern char **environ;

#define MAX_FDS 16 /* descriptors one message may carry */

static uint8_t out_buf[SV_PLAN_MAX_MESSAGE] __attribute__((aligned(8)));
static uint8_t in_buf[SV_PLAN_MAX_MESSAGE + 1] __attribute__((aligned(8)));

struct msg {
    size_t len;
    int overflow;
};

static void begin(struct msg *m, uint16_t type)
{
    memset(out_buf, 0, SV_NLMSG_HDRLEN);
    memcpy(out_buf + 4, &type, 2);
    m->len = SV_NLMSG_HDRLEN;
    m->overflow = 0;
}

static void put(struct msg *m, uint16_t id, const void *payload, size_t n)
{
    size_t total = SV_NLA_HDRLEN + n;
    if (m->overflow || total > 0xffff || m->len + SV_NLA_ALIGN(total) > sizeof(out_buf)) {
        m->overflow = 1;
        return;
    }
    uint16_t hdr[2] = {(uint16_t)total, id};
    memcpy(out_buf + m->len, hdr, 4);
    memcpy(out_buf + m->len + 4, payload, n);
    memset(out_buf + m->len + total, 0, SV_NLA_ALIGN(total) - total);
    m->len += SV_NLA_ALIGN(total);
}

static void put_str(struct msg *m, uint16_t id, const char *s)
{
    put(m, id, s, strlen(s) + 1);
}

static void put_u32(struct msg *m, uint16_t id, uint32_t v)
{
    put(m, id, &v, 4);
}

static int send_msg(int sock, struct msg *m, const int *fds, size_t n_fds)
{
    uint32_t len = (uint32_t)m->len;
    memcpy(out_buf, &len, 4);
    struct iovec iov = {out_buf, m->len};
    union {
        char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (n_fds) {
        mh.msg_control = control.buf;
        mh.msg_controllen = CMSG_SPACE(n_fds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, n_fds * sizeof(int));
    }
    ssize_t r;
    do
        r = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r == (ssize_t)m->len ? 0 : -1;
}

/* One message into in_buf, its descriptors into fds. Its length; 0 at the end; -1 on an error or a
 * message or control data that did not fit. */
static ssize_t recv_msg(int sock, int *fds, size_t *n_fds)
{
    struct iovec iov = {in_buf, sizeof(in_buf)};
    union {
        char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                        .msg_controllen = sizeof(control.buf)};
    ssize_t r;
    do
        r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    *n_fds = 0;
    for (struct cmsghdr *c = r >= 0 ? CMSG_FIRSTHDR(&mh) : NULL; c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n && *n_fds < MAX_FDS; i++)
            memcpy(&fds[(*n_fds)++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    if (r > 0 && (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
        return -1;
    return r;
}

static void close_all(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

/* Spawn what a SPAWN describes: fds[0] is the program, fds[1..] go to s->fds[0..] in the child,
 * which starts with every signal at its default and none blocked. Its pid, or -errno. */
static pid_t spawn(const struct sv_plan_spawn *s, const int *fds)
{
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(report[0]);
        close(report[1]);
        return -e;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        for (int sig = 1; sig < NSIG; sig++)
            signal(sig, SIG_DFL); /* fails harmlessly for KILL, STOP and libc's own */
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* Sources may sit on targets: move every one above the highest target first. */
        int top = 3;
        for (size_t i = 0; i < s->n_fds; i++)
            if ((int)s->fds[i] >= top)
                top = (int)s->fds[i] + 1;
        int err_fd = fcntl(report[1], F_DUPFD_CLOEXEC, top);
        int program = fcntl(fds[0], F_DUPFD_CLOEXEC, top);
        int moved[SV_PLAN_MAX_ARGS];
        int e = err_fd < 0 || program < 0 ? errno : 0;
        for (size_t i = 0; !e && i < s->n_fds; i++)
            if ((moved[i] = fcntl(fds[i + 1], F_DUPFD_CLOEXEC, top)) < 0)
                e = errno;
        for (size_t i = 0; !e && i < s->n_fds; i++)
            if (dup2(moved[i], (int)s->fds[i]) < 0) /* the copy is inherited: no close-on-exec */
                e = errno;
        if (!e) {
            syscall(SYS_execveat, program, "", (char *const *)s->argv, (char *const *)s->envp, AT_EMPTY_PATH);
            e = errno;
        }
        if (write(err_fd >= 0 ? err_fd : report[1], &e, sizeof(e)) < 0)
            _exit(127);
        _exit(127);
    }
    close(report[1]);
    int e = 0;
    ssize_t n;
    do
        n = read(report[0], &e, sizeof(e));
    while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof(e)) { /* the child failed before or at exec */
        waitpid(pid, NULL, 0);
        return -(e ? e : EIO);
    }
    return pid;
}

/* Kill and reap every child we have: the planner is gone mid-call. */
static void kill_children(void)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/task/%ld/children", (long)getpid());
    for (int round = 0; round < 2; round++) {
        FILE *f = fopen(path, "re");
        if (f) {
            long pid;
            while (fscanf(f, "%ld", &pid) == 1)
                kill((pid_t)pid, SIGKILL);
            fclose(f);
        }
        while (waitpid(-1, NULL, 0) > 0)
            ;
    }
}

__attribute__((format(printf, 3, 4)))
static int failed(char *err, size_t errlen, const char *fmt, ...)
{
    char text[1024]; /* the arguments may point into err: format apart, then copy */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "%s", text);
    kill_children();
    return -1;
}

int sv_plan_call(const char *root, char *const argv[], int *code, char *err, size_t errlen)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/%s", root, sv_plan_socket_name()) >=
        (int)sizeof(addr.sun_path))
        return 0;
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0)
            return 0; /* the Python command copes with a closed stdio; the protocol needs all three */
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return 0;
    struct ucred peer;
    socklen_t peer_len = sizeof(peer);
    if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) < 0 || peer.uid != geteuid()) {
        /* none, or another user's: ROOT may be writable by others, and a planner is sent our working
         * directory and stdio and has us run what it says */
        close(sock);
        return 0;
    }
    int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct msg m;
    begin(&m, SV_PLAN_MSG_CALL);
    for (int i = 1; argv[i]; i++)
        put_str(&m, SV_PLAN_ATTR_ARG, argv[i]);
    for (char **e = environ; *e; e++)
        put_str(&m, SV_PLAN_ATTR_ENV, *e);
    mode_t mask = umask(0);
    umask(mask);
    put_u32(&m, SV_PLAN_ATTR_UMASK, (uint32_t)mask);
    int fds[MAX_FDS] = {cwd, 0, 1, 2};
    if (cwd < 0 || m.overflow || send_msg(sock, &m, fds, 4) < 0) {
        if (cwd >= 0)
            close(cwd);
        close(sock);
        return 0;
    }
    close(cwd);
    int accepted = 0;
    for (;;) {
        size_t n_fds;
        ssize_t len = recv_msg(sock, fds, &n_fds);
        uint16_t type = 0;
        if (len >= SV_NLMSG_HDRLEN)
            memcpy(&type, in_buf + 4, 2);
        if (len >= SV_NLMSG_HDRLEN && type == SV_PLAN_MSG_DECLINE && !accepted) {
            close_all(fds, n_fds);
            close(sock);
            return 0;
        }
        if (len >= SV_NLMSG_HDRLEN && type == SV_PLAN_MSG_ACCEPT && !accepted && !n_fds) {
            uint32_t worker;
            if (sv_plan_parse_u32(in_buf, (size_t)len, type, SV_PLAN_ATTR_PID, INT32_MAX, &worker, err, errlen) < 0) {
                close(sock);
                return failed(err, errlen, "the planner's answer: %s", err);
            }
            accepted = 1; /* a create forwards no signals (runc's does not either) */
            continue;
        }
        if (len >= SV_NLMSG_HDRLEN && type == SV_PLAN_MSG_WAIT && accepted && !n_fds) {
            uint32_t child;
            if (sv_plan_parse_u32(in_buf, (size_t)len, type, SV_PLAN_ATTR_PID, INT32_MAX, &child, err, errlen) < 0) {
                close(sock);
                return failed(err, errlen, "the planner's wait: %s", err);
            }
            int status;
            pid_t r;
            do
                r = waitpid((pid_t)child, &status, 0);
            while (r < 0 && errno == EINTR);
            begin(&m, SV_PLAN_MSG_WAITED);
            if (r == (pid_t)child)
                put_u32(&m, SV_PLAN_ATTR_STATUS, (uint32_t)status);
            else
                put_u32(&m, SV_PLAN_ATTR_ERRNO, (uint32_t)errno);
            if (send_msg(sock, &m, NULL, 0) < 0) {
                close(sock);
                return failed(err, errlen, "the planner went away: %s", strerror(errno));
            }
            continue;
        }
        if (len >= SV_NLMSG_HDRLEN && type == SV_PLAN_MSG_DONE && accepted) {
            close_all(fds, n_fds);
            uint32_t exit_code;
            if (sv_plan_parse_u32(in_buf, (size_t)len, type, SV_PLAN_ATTR_EXIT, 255, &exit_code, err, errlen) < 0) {
                close(sock);
                return failed(err, errlen, "the planner's answer: %s", err);
            }
            close(sock);
            /* What the call spawned and has ended: the bootstrap, an init it killed. A running init
             * stays ours until we leave, then it is the caller's subreaper's. */
            while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
            *code = (int)exit_code;
            return 1;
        }
        if (len >= SV_NLMSG_HDRLEN && type == SV_PLAN_MSG_SPAWN && accepted) {
            static struct sv_plan_spawn s;
            if (sv_plan_parse_spawn(in_buf, (size_t)len, &s, err, errlen) < 0 || n_fds != s.n_fds + 1) {
                close_all(fds, n_fds);
                close(sock);
                if (n_fds != s.n_fds + 1)
                    snprintf(err, errlen, "%zu descriptors", n_fds);
                return failed(err, errlen, "the planner's spawn: %s", err);
            }
            pid_t pid = spawn(&s, fds);
            close_all(fds, n_fds);
            begin(&m, SV_PLAN_MSG_SPAWNED);
            int pidfd = -1;
            if (pid > 0 && (pidfd = (int)syscall(SYS_pidfd_open, pid, 0)) >= 0)
                put_u32(&m, SV_PLAN_ATTR_PID, (uint32_t)pid);
            else
                put_u32(&m, SV_PLAN_ATTR_ERRNO, (uint32_t)(pid > 0 ? errno : -pid));
            int r = send_msg(sock, &m, &pidfd, pidfd >= 0 ? 1 : 0);
            if (pidfd >= 0)
                close(pidfd);
            if (r < 0) {
                close(sock);
                return failed(err, errlen, "the planner went away: %s", strerror(errno));
            }
            continue;
        }
        close_all(fds, n_fds);
        close(sock);
        if (len == 0 && !accepted)
            return 0; /* gone before it took the call (a planner stopping, say): nothing was done */
        if (len < 0)
            return failed(err, errlen, "the planner's answer: %s", errno ? strerror(errno) : "truncated");
        if (len == 0)
            return failed(err, errlen, "the planner ended the call without an answer");
        return failed(err, errlen, "the planner's answer: message type %u", type);
    }
}
