/* init.c - the container init: from the supervisor's go-ahead to execve.
 *
 * The order follows runc's standard init: root propagation and the rootfs bind, the planned
 * filesystem steps (mounts, /dev, the createContainer hooks, pivot_root, read-only root, sysctls,
 * read-only and masked paths, in the order the planner chose), hostname, rlimits, umask,
 * no_new_privs, credentials and capabilities, the parent-death signal, closing fds, cwd, the exec
 * FIFO, the startContainer hooks (hooks.c), execve. Every step is a small function;
 * every failure goes through sv_fail(), which names the operation and the object.
 *
 * Paths inside the container are resolved with openat2(RESOLVE_IN_ROOT) against a descriptor of the
 * root, so neither a symlink nor ".." leaves it, and mounts go onto /proc/self/fd/N of the resolved
 * descriptor, never onto a path string that could be swapped underneath us.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <sys/socket.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include "bootstrap.h"

#ifndef PROC_SUPER_MAGIC
#define PROC_SUPER_MAGIC 0x9fa0
#endif
#ifndef DEVPTS_SUPER_MAGIC
#define DEVPTS_SUPER_MAGIC 0x1cd1
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static int root_fd = -1;
static int exec_fifo_fd = -1;   /* O_PATH, opened while host paths are still visible */

/* PATH itself (not a symlink there) is a procfs: only then does /proc/self/fd/N name our own
 * descriptors rather than whatever the rootfs put there (CVE-2019-19921 class). */
static int is_procfs(const char *path)
{
    struct statfs fs;
    int fd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int ok = fd >= 0 && fstatfs(fd, &fs) == 0 && fs.f_type == PROC_SUPER_MAGIC;
    if (fd >= 0)
        close(fd);
    return ok;
}
static const char *root_name;  /* for error messages */
static int fd_paths = 1;        /* /proc/self/fd is usable for mount targets */

/* -- the handshake -------------------------------------------------------------------------- */

static void wait_for_supervisor(void)
{
    struct sv_sync_header h;
    size_t got = 0;
    while (got < sizeof(h)) {
        ssize_t n = read(sv_sync_fd, (char *)&h + got, sizeof(h) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(1); /* the supervisor is gone: nobody to report to */
        got += (size_t)n;
    }
    if (h.type != SV_SYNC_CONTINUE || h.len != 0)
        sv_fail(EPROTO, "sync", "expected continue, got message %u", h.type);
}

/* -- paths inside the root ------------------------------------------------------------------ */

static int openat2_in(int dirfd, const char *path, uint64_t flags, uint64_t resolve)
{
    struct open_how how = {.flags = flags | O_CLOEXEC, .resolve = resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

static int resolve(const char *path, uint64_t flags)
{
    return openat2_in(root_fd, path, O_PATH | flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
}

/* The last component of PATH (trailing slashes ignored) into NAME; returns the length of its parent. */
static size_t split_path(const char *path, char *name, size_t name_size)
{
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    const char *slash = memrchr(path, '/', len);
    size_t plen = slash ? (size_t)(slash - path) : 0;
    size_t nlen = len - plen - (slash ? 1 : 0);
    if (nlen >= name_size)
        sv_fail(ENAMETOOLONG, "resolve", "%s", path);
    memcpy(name, path + len - nlen, nlen);
    name[nlen] = '\0';
    if (nlen == 0 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        sv_fail(EINVAL, "resolve", "%s", path);
    return plen;
}

/* mkdir -p inside the root; an existing directory is fine. A loop over the path's prefixes, each
 * resolved from the root again (a symlink among them still resolves inside it), never a recursion:
 * a destination of thousands of missing components must not exhaust the stack. */
static void make_dirs(const char *path, mode_t mode)
{
    char prefix[PATH_MAX], name[NAME_MAX + 1];
    size_t len = strlen(path);
    if (len >= sizeof(prefix))
        sv_fail(ENAMETOOLONG, "resolve", "%s", path);
    int fd = resolve(path, O_DIRECTORY);
    if (fd >= 0) {
        close(fd);
        return;
    }
    if (errno != ENOENT)
        sv_fail(errno, "resolve", "%s", path);
    for (size_t end = 1; end <= len; end++) {
        if (end < len && (path[end] != '/' || path[end - 1] == '/'))
            continue; /* not the end of a component */
        memcpy(prefix, path, end);
        prefix[end] = '\0';
        fd = resolve(prefix, O_DIRECTORY);
        if (fd >= 0) {
            close(fd);
            continue;
        }
        if (errno != ENOENT)
            sv_fail(errno, "resolve", "%s", prefix);
        size_t plen = split_path(prefix, name, sizeof(name));
        prefix[plen ? plen : 1] = '\0'; /* the parent: "/" for a top-level name */
        int parent = resolve(prefix, O_DIRECTORY);
        if (parent < 0)
            sv_fail(errno, "resolve", "%s", prefix);
        if (mkdirat(parent, name, end == len ? mode : 0755) < 0 && errno != EEXIST)
            sv_fail(errno, "mkdir", "%s", path);
        close(parent);
    }
}

/* Splits "/a/b/c" into a descriptor of "/a/b" (created if missing) and "c". */
static int open_parent(const char *path, char *name, size_t name_size)
{
    char parent[PATH_MAX];
    size_t plen = split_path(path, name, name_size);
    if (plen >= sizeof(parent))
        sv_fail(ENAMETOOLONG, "resolve", "%s", path);
    memcpy(parent, path, plen);
    parent[plen] = '\0';
    if (plen == 0)
        strcpy(parent, "/");
    make_dirs(parent, 0755);
    int fd = resolve(parent, O_DIRECTORY);
    if (fd < 0)
        sv_fail(errno, "resolve", "%s", parent);
    return fd;
}

/* Opens DST inside the root as O_PATH, first creating it as the step says when it is missing. */
static int open_target(const char *dst, uint32_t mktype, mode_t mode, int missing_ok)
{
    int fd = resolve(dst, 0);
    if (fd >= 0 || errno != ENOENT || mktype == SV_MK_NONE) {
        if (fd < 0 && !(missing_ok && errno == ENOENT))
            sv_fail(errno, "resolve", "%s", dst);
        return fd;
    }
    if (mktype == SV_MK_DIR) {
        make_dirs(dst, mode ? mode : 0755);
    } else {
        char name[NAME_MAX + 1];
        int parent = open_parent(dst, name, sizeof(name));
        /* O_EXCL: never open what appeared meanwhile (a FIFO would block us for ever). */
        int f = openat(parent, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, mode ? mode : 0644);
        if (f < 0 && errno != EEXIST)
            sv_fail(errno, "create", "%s", dst);
        if (f >= 0)
            close(f);
        close(parent);
    }
    fd = resolve(dst, 0);
    if (fd < 0)
        sv_fail(errno, "resolve", "%s", dst);
    return fd;
}

/* What to hand mount(2) as the target: the resolved descriptor, or (without a /proc) the path. */
struct target {
    char path[PATH_MAX];
};

static const char *target_of(struct target *t, int fd, const char *dst)
{
    if (fd_paths)
        snprintf(t->path, sizeof(t->path), "/proc/self/fd/%d", fd);
    else
        snprintf(t->path, sizeof(t->path), "%s", dst);
    return t->path;
}

/* The flags a remount must keep: the kernel refuses to drop locked ones in a user namespace. */
static unsigned long mount_flags_of(const char *target)
{
    struct statvfs st;
    if (statvfs(target, &st) < 0)
        sv_fail(errno, "statvfs", "%s", target);
    unsigned long f = 0;
    if (st.f_flag & ST_NOSUID) f |= MS_NOSUID;
    if (st.f_flag & ST_NODEV) f |= MS_NODEV;
    if (st.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
    if (st.f_flag & ST_NOATIME) f |= MS_NOATIME;
    if (st.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
    if (st.f_flag & ST_RELATIME) f |= MS_RELATIME;
    return f;
}

static void remount_readonly(int fd, const char *dst)
{
    struct target t;
    const char *target = target_of(&t, fd, dst);
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | mount_flags_of(target);
    if (mount(NULL, target, NULL, flags, NULL) < 0)
        sv_fail(errno, "remount read-only", "%s", dst);
}

/* -- the steps ------------------------------------------------------------------------------ */

static const char *cgroup_path; /* SV_ATTR_CGROUP_PATH */

/* What a step binds (a bind mount's or a device's source): each host path opened O_PATH by
 * sources_open() before the first mount (a directory through "DIR/.", which triggers an automount
 * there), indexed like cfg->steps; -1 where a step has none. At its step the source is cloned as a
 * detached mount (open_tree), gets its flags, and is attached onto the descriptor its destination
 * resolved to (move_mount): no path is resolved twice, so nothing swapped in between (a shared
 * volume's symlink, say) can take the mount or its read-only flag elsewhere (CVE-2021-30465 class). */
static int *source_fds;

static int binds_host_path(const struct sv_step *s)
{
    return (s->op == SV_OP_MOUNT && (s->flags & MS_BIND) && s->src != NULL) || s->op == SV_OP_BIND_DEV;
}

static int open_tree_at(int dirfd, const char *path, unsigned flags)
{
    return (int)syscall(SYS_open_tree, dirfd, path, flags | OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
}

/* Every bind source is a path in the host's view: clone them all while that is what we see, before the
 * rootfs bind or a mount of the container's (its /tmp, say) could cover one. Errors name the source. */
static void sources_open(const struct sv_config *cfg)
{
    char joined[PATH_MAX];
    char dir[PATH_MAX];
    source_fds = calloc(cfg->n_steps ? cfg->n_steps : 1, sizeof(int));
    if (source_fds == NULL)
        sv_fail(ENOMEM, "open bind sources", "%zu steps", cfg->n_steps);
    for (size_t i = 0; i < cfg->n_steps; i++) {
        const struct sv_step *s = &cfg->steps[i];
        source_fds[i] = -1;
        if (!binds_host_path(s))
            continue;
        const char *source = s->src;
        if (s->cgroup) {
            if (snprintf(joined, sizeof(joined), "%s/%s", s->src, cgroup_path) >= (int)sizeof(joined))
                sv_fail(ENAMETOOLONG, "open bind source", "%s", s->src);
            source = joined;
        }
        if (snprintf(dir, sizeof(dir), "%s/.", source) >= (int)sizeof(dir))
            sv_fail(ENAMETOOLONG, "open bind source", "%s", source);
        source_fds[i] = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (source_fds[i] < 0 && errno == ENOTDIR)
            source_fds[i] = open(source, O_PATH | O_CLOEXEC);
        if (source_fds[i] < 0)
            sv_fail(errno, "open bind source", "%s", source);
    }
}

static void sources_close(const struct sv_config *cfg)
{
    for (size_t i = 0; source_fds != NULL && i < cfg->n_steps; i++)
        if (source_fds[i] >= 0)
            close(source_fds[i]);
    free(source_fds);
    source_fds = NULL;
}

/* What a bind's MS_* flags ask of mount_setattr. Only set, never cleared: in a user namespace the
 * source's flags are locked, and a bind keeps them (as a remount that kept them did). */
static void attr_of(unsigned long flags, struct mount_attr *attr)
{
    memset(attr, 0, sizeof(*attr));
    if (flags & MS_RDONLY) attr->attr_set |= MOUNT_ATTR_RDONLY;
    if (flags & MS_NOSUID) attr->attr_set |= MOUNT_ATTR_NOSUID;
    if (flags & MS_NODEV) attr->attr_set |= MOUNT_ATTR_NODEV;
    if (flags & MS_NOEXEC) attr->attr_set |= MOUNT_ATTR_NOEXEC;
    if (flags & MS_NODIRATIME) attr->attr_set |= MOUNT_ATTR_NODIRATIME;
    if (flags & (MS_NOATIME | MS_RELATIME | MS_STRICTATIME)) {
        attr->attr_clr |= MOUNT_ATTR__ATIME;
        attr->attr_set |= (flags & MS_NOATIME) ? MOUNT_ATTR_NOATIME
                          : (flags & MS_STRICTATIME) ? MOUNT_ATTR_STRICTATIME : MOUNT_ATTR_RELATIME;
    }
}

static int setattr_tree(int tree, const struct mount_attr *attr, int recursive)
{
    struct mount_attr a = *attr;
    unsigned at = AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0);
    if (syscall(SYS_mount_setattr, tree, "", at, &a, sizeof(a)) == 0)
        return 0;
    if (errno != EPERM || !(a.attr_clr & MOUNT_ATTR__ATIME))
        return -1;
    /* A locked atime (a user namespace's bind of a host mount) stays as it is. */
    a.attr_clr &= ~MOUNT_ATTR__ATIME;
    a.attr_set &= ~(MOUNT_ATTR_NOATIME | MOUNT_ATTR_STRICTATIME | MOUNT_ATTR_RELATIME);
    return (int)syscall(SYS_mount_setattr, tree, "", at, &a, sizeof(a));
}

/* Attach a detached TREE onto the descriptor TARGET its destination resolved to. */
static void attach(int tree, int target, const char *op, const char *dst)
{
    if (syscall(SYS_move_mount, tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        sv_fail(errno, op, "%s", dst);
}

/* A destination that resolves to the root itself (a symlink swapped since the planner checked it)
 * would bury the container's root under the mount. */
static void refuse_root(int fd, const char *dst)
{
    struct stat a, b;
    if (fstat(fd, &a) == 0 && fstat(root_fd, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        sv_fail(EPERM, "mount", "%s (it leads to the root)", dst);
}

static void step_mount(size_t i, const struct sv_step *s)
{
    struct target t;
    int fd;
    if (s->fstype != NULL && (strcmp(s->fstype, "proc") == 0 || strcmp(s->fstype, "sysfs") == 0)) {
        /* procfs and sysfs go on a real directory: through a symlink in the rootfs they would land
         * where the masked and read-only paths miss them (CVE-2019-19921, CVE-2023-27561, CVE-2023-28642). */
        make_dirs(s->dst, 0755);
        fd = openat2_in(root_fd, s->dst, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS);
        if (fd < 0)
            sv_fail(errno == ELOOP ? EPERM : errno, "mount", "%s (%s must be on a directory, not a symlink)",
                    s->dst, s->fstype);
    } else {
        fd = open_target(s->dst, s->mktype, 0, 0);
        refuse_root(fd, s->dst);
        /* The planner allows nothing over the container's procfs but a few files under /proc; what
         * the destination leads to now (the rootfs may have changed since) must agree
         * (CVE-2019-19921). */
        struct statfs fs;
        if (strncmp(s->dst, "/proc/", 6) != 0 && fstatfs(fd, &fs) == 0 && fs.f_type == PROC_SUPER_MAGIC)
            sv_fail(EPERM, "mount", "%s (it leads into procfs)", s->dst);
    }
    if (source_fds[i] >= 0) {
        /* A bind: flags on the detached tree, then attached onto FD; propagation through the tree's
         * descriptor once attached. */
        int tree = open_tree_at(source_fds[i], "", AT_EMPTY_PATH | ((s->flags & MS_REC) ? AT_RECURSIVE : 0));
        if (tree < 0)
            sv_fail(errno, "bind", "%s", s->src);
        struct mount_attr attr;
        attr_of(s->remount_flags, &attr);
        if ((attr.attr_set || attr.attr_clr) && setattr_tree(tree, &attr, (s->flags & MS_REC) != 0) < 0)
            sv_fail(errno, "remount", "%s", s->dst);
        attach(tree, fd, "mount", s->dst);
        close(fd);
        if (s->propagation) {
            struct mount_attr prop = {.propagation = s->propagation & ~(unsigned long)MS_REC};
            unsigned at = AT_EMPTY_PATH | ((s->propagation & MS_REC) ? AT_RECURSIVE : 0);
            if (syscall(SYS_mount_setattr, tree, "", at, &prop, sizeof(prop)) < 0)
                sv_fail(errno, "set propagation", "%s", s->dst);
        }
        close(tree);
        return;
    }
    if (mount(s->src ? s->src : s->fstype, target_of(&t, fd, s->dst), s->fstype, s->flags, s->data) < 0)
        sv_fail(errno, "mount", "%s", s->dst);
    close(fd);
    if (s->propagation == 0)
        return;
    fd = open_target(s->dst, SV_MK_NONE, 0, 0); /* the new mount, now on top */
    if (mount(NULL, target_of(&t, fd, s->dst), NULL, s->propagation, NULL) < 0)
        sv_fail(errno, "set propagation", "%s", s->dst);
    close(fd);
}

static void step_symlink(const struct sv_step *s)
{
    char name[NAME_MAX + 1];
    int parent = open_parent(s->dst, name, sizeof(name));
    if (symlinkat(s->src, parent, name) < 0 && errno != EEXIST)
        sv_fail(errno, "symlink", "%s", s->dst);
    close(parent);
}

static void step_mknod(const struct sv_step *s)
{
    char name[NAME_MAX + 1];
    int parent = open_parent(s->dst, name, sizeof(name));
    if (mknodat(parent, name, s->mode, makedev(s->major, s->minor)) < 0 && errno != EEXIST)
        sv_fail(errno, "mknod", "%s", s->dst);
    if (fchownat(parent, name, s->uid, s->gid, AT_SYMLINK_NOFOLLOW) < 0)
        sv_fail(errno, "chown", "%s", s->dst);
    close(parent);
}

static void step_bind_dev(size_t i, const struct sv_step *s)
{
    int fd = open_target(s->dst, SV_MK_FILE, 0, 0);
    int tree = open_tree_at(source_fds[i], "", AT_EMPTY_PATH);
    if (tree < 0)
        sv_fail(errno, "bind device", "%s", s->src);
    attach(tree, fd, "bind device", s->dst);
    close(tree);
    close(fd);
}

static void reopen_root(void)
{
    close(root_fd);
    root_fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        sv_fail(errno, "open", "/");
    fd_paths = is_procfs("/proc");
}

static void step_pivot(void)
{
    if (fchdir(root_fd) < 0)
        sv_fail(errno, "chdir", "%s", root_name);
    /* pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves the new
     * root alone without needing a put_old directory. */
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        sv_fail(errno, "pivot_root", "%s", root_name);
    if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0)
        sv_fail(errno, "make old root slave", "%s", root_name);
    if (umount2(".", MNT_DETACH) < 0)
        sv_fail(errno, "detach old root", "%s", root_name);
    if (chdir("/") < 0)
        sv_fail(errno, "chdir", "/");
    reopen_root();
}

static void step_chroot(void)
{
    if (fchdir(root_fd) < 0 || chroot(".") < 0 || chdir("/") < 0)
        sv_fail(errno, "chroot", "%s", root_name);
    reopen_root();
}

static void step_readonly(const struct sv_step *s)
{
    int fd = open_target(s->dst, SV_MK_NONE, 0, 1);
    if (fd < 0)
        return; /* nothing to protect */
    /* A read-only clone of what is there, attached where it was cloned from: one resolution. */
    int tree = open_tree_at(fd, "", AT_EMPTY_PATH | AT_RECURSIVE);
    struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY};
    if (tree < 0 || syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &ro, sizeof(ro)) < 0)
        sv_fail(errno, "bind", "%s", s->dst);
    attach(tree, fd, "bind", s->dst);
    close(tree);
    close(fd);
}

static void step_mask(const struct sv_step *s)
{
    struct target t, n;
    struct stat st;
    int fd = open_target(s->dst, SV_MK_NONE, 0, 1);
    if (fd < 0)
        return; /* nothing to hide */
    if (fstat(fd, &st) < 0)
        sv_fail(errno, "stat", "%s", s->dst);
    const char *target = target_of(&t, fd, s->dst);
    if (S_ISDIR(st.st_mode)) {
        if (mount("tmpfs", target, "tmpfs", MS_RDONLY, NULL) < 0)
            sv_fail(errno, "mask", "%s", s->dst);
    } else {
        /* The container's own /dev/null, checked to be the real device (CVE-2025-31133). */
        int null = resolve("/dev/null", 0);
        struct stat ns;
        if (null < 0 || fstat(null, &ns) < 0)
            sv_fail(errno, "resolve", "/dev/null");
        if (!S_ISCHR(ns.st_mode) || ns.st_rdev != makedev(1, 3))
            sv_fail(EPERM, "mask with", "/dev/null (not the null device)");
        if (mount(target_of(&n, null, "/dev/null"), target, NULL, MS_BIND, NULL) < 0)
            sv_fail(errno, "mask", "%s", s->dst);
        close(null);
    }
    close(fd);
}

static void step_sysctl(const struct sv_step *s)
{
    int dir = resolve("/proc/sys", O_DIRECTORY);
    struct statfs fs;
    if (dir < 0)
        sv_fail(errno, "resolve", "/proc/sys");
    if (fstatfs(dir, &fs) < 0 || fs.f_type != PROC_SUPER_MAGIC)
        sv_fail(EPERM, "sysctl", "/proc/sys is not procfs");
    int fd = openat2_in(dir, s->dst, O_WRONLY, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV);
    if (fd < 0)
        sv_fail(errno, "open sysctl", "%s", s->dst);
    size_t len = strlen(s->data);
    if (write(fd, s->data, len) != (ssize_t)len)
        sv_fail(errno, "write sysctl", "%s", s->dst);
    close(fd);
    close(dir);
}

static void step_setattr_ro(const struct sv_step *s)
{
    int fd = open_target(s->dst, SV_MK_NONE, 0, 0);
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY};
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0)
        sv_fail(errno, "make read-only", "%s", s->dst);
    close(fd);
}

static void set_lsm_labels(const struct sv_config *cfg);

/* createContainer: the mounts and /dev are done, the old root still there (runc's point). As under
 * runc, their cwd is the container's root and their umask the usual one, not the 0 of our steps.
 * The LSM exec label waits for them: a forked hook would inherit it and exec confined, where runc
 * runs them unconfined and labels only what comes after. */
static void run_create_hooks(const struct sv_config *cfg)
{
    mode_t old = umask(022);
    sv_run_hooks("createContainer", cfg->create_hooks, cfg->n_create_hooks, cfg->create_state, cfg->state_tail,
                 root_fd);
    umask(old);
    set_lsm_labels(cfg);
}

static void run_step(const struct sv_config *cfg, size_t i)
{
    const struct sv_step *s = &cfg->steps[i];
    int fd;
    switch (s->op) {
    case SV_OP_MOUNT: step_mount(i, s); break;
    case SV_OP_MKDIR: make_dirs(s->dst, s->mode ? s->mode : 0755); break;
    case SV_OP_SYMLINK: step_symlink(s); break;
    case SV_OP_MKNOD: step_mknod(s); break;
    case SV_OP_BIND_DEV: step_bind_dev(i, s); break;
    case SV_OP_PIVOT: step_pivot(); break;
    case SV_OP_CHROOT: step_chroot(); break;
    case SV_OP_REMOUNT_RO:
        fd = open_target(s->dst, SV_MK_NONE, 0, 0);
        remount_readonly(fd, s->dst);
        close(fd);
        break;
    case SV_OP_READONLY: step_readonly(s); break;
    case SV_OP_MASK: step_mask(s); break;
    case SV_OP_SYSCTL: step_sysctl(s); break;
    case SV_OP_SETATTR_RO: step_setattr_ro(s); break;
    case SV_OP_PROPAGATE:
        fd = open_target(s->dst, SV_MK_NONE, 0, 0);
        struct target t;
        if (mount(NULL, target_of(&t, fd, s->dst), NULL, s->propagation, NULL) < 0)
            sv_fail(errno, "set propagation", "%s", s->dst);
        close(fd);
        break;
    case SV_OP_HOOKS: run_create_hooks(cfg); break;
    }
}

/* -- the console --------------------------------------------------------------------------- */

/* A pty from the container's own devpts (its /dev/ptmx, after pivot_root, or the joined mount
 * namespace's for an exec). The peer comes from TIOCGPTPEER, never from a /dev/pts/N path that a
 * symlink could redirect (CVE-2025-52565). The master goes to the supervisor; the peer becomes our
 * controlling terminal and stdio. */
static void setup_console(const struct sv_config *cfg)
{
    /* The path is the container's (an exec opens it in a running container, which may have mounted
     * anything there): no magic links on the way, and what opened must be the pty multiplexer, whose
     * peer lives on a devpts (CVE-2025-52881 class). */
    struct open_how how = {.flags = O_RDWR | O_NOCTTY | O_CLOEXEC, .resolve = RESOLVE_NO_MAGICLINKS};
    int master = (int)syscall(SYS_openat2, AT_FDCWD, "/dev/ptmx", &how, sizeof(how));
    if (master < 0)
        sv_fail(errno, "open", "/dev/ptmx");
    struct stat st;
    if (fstat(master, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(5, 2))
        sv_fail(EPERM, "open", "/dev/ptmx (not the pty multiplexer)");
    int unlock = 0;
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
        sv_fail(errno, "unlock pty", "/dev/ptmx");
    int peer = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (peer < 0)
        sv_fail(errno, "open pty peer", "/dev/ptmx");
    struct statfs fs;
    if (fstatfs(peer, &fs) < 0 || fs.f_type != DEVPTS_SUPER_MAGIC)
        sv_fail(EPERM, "open pty peer", "/dev/ptmx (its peer is not on a devpts)");
    if (cfg->has_uid && fchown(peer, cfg->uid, cfg->has_gid ? cfg->gid : (gid_t)-1) < 0 && errno != EPERM)
        sv_fail(errno, "chown", "the pty");
    /* The size before the workload runs: a program that asks at once must not see 0x0. */
    struct winsize ws = {.ws_row = (unsigned short)(cfg->console_size >> 16),
                         .ws_col = (unsigned short)(cfg->console_size & 0xFFFF)};
    if (cfg->has_console_size && ioctl(peer, TIOCSWINSZ, &ws) < 0)
        sv_fail(errno, "set window size", "the pty");
    if (sv_send_fd(SV_SYNC_CONSOLE, master) < 0)
        _exit(1); /* the supervisor is gone */
    close(master);
    if (ioctl(peer, TIOCSCTTY, 0) < 0)
        sv_fail(errno, "make controlling terminal", "the pty");
    for (int fd = 0; fd < 3; fd++)
        if (dup2(peer, fd) < 0)
            sv_fail(errno, "dup2", "the pty to %d", fd);
    if (peer > 2)
        close(peer);
}

/* -- LSM labels ---------------------------------------------------------------------------- */

/* A procfs instance of our own, attached nowhere (fsopen/fsmount): nothing in a container can have
 * mounted anything over it, as it could over the /proc an exec finds in the container's mount
 * namespace (CVE-2025-52881). -1 where the kernel or our privileges refuse it. */
static int private_procfs(void)
{
    int fs = (int)syscall(SYS_fsopen, "proc", FSOPEN_CLOEXEC);
    if (fs < 0)
        return -1;
    int mnt = -1;
    if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0)
        mnt = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, 0);
    close(fs);
    return mnt;
}

/* What the next execve runs under: FILE (relative to a procfs) is written through a procfs of our own,
 * or else the one at /proc, and only if what opened is on a real procfs (a fake one would apply
 * nothing: CVE-2019-16884). Fails closed. */
static void set_exec_label(int proc, const char *file, const char *fallback, const char *value)
{
    char path[PATH_MAX];
    const char *name = file;
    int fd = -1;
    for (int i = 0; i < 2 && fd < 0 && name != NULL; i++, name = fallback) {
        snprintf(path, sizeof(path), "/proc/%s", name);
        fd = proc >= 0 ? openat(proc, name, O_WRONLY | O_CLOEXEC) : open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 && errno != ENOENT)
            break;
    }
    struct statfs fs;
    if (fd < 0 || fstatfs(fd, &fs) < 0 || fs.f_type != PROC_SUPER_MAGIC)
        sv_fail(fd < 0 ? errno : EPERM, "open", "/proc/%s", file);
    size_t len = strlen(value);
    if (write(fd, value, len) != (ssize_t)len)
        sv_fail(errno, "set exec label", "%s", value);
    close(fd);
}

static void set_lsm_labels(const struct sv_config *cfg)
{
    char profile[4096];
    if (cfg->apparmor == NULL && cfg->selinux == NULL)
        return;
    int proc = private_procfs();
    if (cfg->apparmor != NULL) {
        snprintf(profile, sizeof(profile), "exec %s", cfg->apparmor);
        set_exec_label(proc, "thread-self/attr/apparmor/exec", "thread-self/attr/exec", profile);
    }
    if (cfg->selinux != NULL)
        set_exec_label(proc, "thread-self/attr/exec", NULL, cfg->selinux);
    if (proc >= 0)
        close(proc);
}

/* -- seccomp ------------------------------------------------------------------------------ */

static int seccomp_installed;

/* Once: before the capabilities go (without no_new_privs), before the startContainer hooks, or last. */
static void install_seccomp(const struct sv_config *cfg)
{
    if (cfg->seccomp == NULL || seccomp_installed)
        return;
    seccomp_installed = 1;
    struct sock_fprog prog = {
        .len = (unsigned short)(cfg->seccomp_len / sizeof(struct sock_filter)),
        .filter = (struct sock_filter *)(uintptr_t)cfg->seccomp,
    };
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, cfg->seccomp_flags, &prog) < 0)
        sv_fail(errno, "seccomp", "filter of %u instructions", prog.len);
}

/* -- the network -------------------------------------------------------------------------- */

static void bring_up_loopback(void)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strcpy(ifr.ifr_name, "lo");
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        sv_fail(errno, "socket", "for lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        sv_fail(errno, "get flags", "lo");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        sv_fail(errno, "bring up", "lo");
    close(s);
}

/* -- the root ------------------------------------------------------------------------------- */

static void prepare_root(const struct sv_config *cfg)
{
    const char *root = cfg->rootfs;
    root_name = cfg->rootfs;
    /* With a new mount namespace: keep our mounts from reaching the host, and make the rootfs a
     * mount point of its own, which pivot_root requires. */
    if (cfg->root_propagation) {
        if (mount(NULL, "/", NULL, cfg->root_propagation, NULL) < 0)
            sv_fail(errno, "set propagation", "/");
        if (cfg->rootfs_bind)
            root = cfg->rootfs_bind;
        if (mount(cfg->rootfs, root, NULL, MS_BIND | MS_REC, NULL) < 0)
            sv_fail(errno, "bind rootfs", "%s", cfg->rootfs);
    }
    root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        sv_fail(errno, "open rootfs", "%s", cfg->rootfs);
}

/* -- the process ---------------------------------------------------------------------------- */

static void set_rlimits(const struct sv_config *cfg)
{
    for (size_t i = 0; i < cfg->n_rlimits; i++) {
        const struct sv_rlimit *r = &cfg->rlimits[i];
        struct rlimit lim = {.rlim_cur = r->soft, .rlim_max = r->hard};
        if (setrlimit((int)r->resource, &lim) < 0)
            sv_fail(errno, "setrlimit", "%u", r->resource);
    }
}

static void set_capabilities(const struct sv_config *cfg)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {
        {(uint32_t)cfg->cap_effective, (uint32_t)cfg->cap_permitted, (uint32_t)cfg->cap_inheritable},
        {(uint32_t)(cfg->cap_effective >> 32), (uint32_t)(cfg->cap_permitted >> 32),
         (uint32_t)(cfg->cap_inheritable >> 32)},
    };
    if (syscall(SYS_capset, &hdr, data) < 0)
        sv_fail(errno, "capset", "effective %llx permitted %llx", (unsigned long long)cfg->cap_effective,
                (unsigned long long)cfg->cap_permitted);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        sv_fail(errno, "prctl", "PR_CAP_AMBIENT_CLEAR_ALL");
    for (unsigned cap = 0; cap < 64; cap++) {
        /* As runc does, an ambient capability that is not also permitted and inheritable is left
         * out rather than failing the container. */
        if ((cfg->cap_ambient >> cap) & 1)
            (void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
    }
}

/* Bounding set first (needs CAP_SETPCAP), then the ids with keep-caps, then the final sets. */
static void set_credentials(const struct sv_config *cfg)
{
    if (cfg->has_caps) {
        for (unsigned cap = 0; cap < 64; cap++) {
            int r = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
            if (r < 0)
                break; /* past the kernel's last capability */
            if (r == 1 && !((cfg->cap_bounding >> cap) & 1) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
                sv_fail(errno, "drop from bounding set", "capability %u", cap);
        }
    }
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        sv_fail(errno, "prctl", "PR_SET_KEEPCAPS");
    if (cfg->setgroups && setgroups(cfg->n_groups, cfg->groups) < 0)
        sv_fail(errno, "setgroups", "%zu groups", cfg->n_groups);
    if (cfg->has_gid && setresgid(cfg->gid, cfg->gid, cfg->gid) < 0)
        sv_fail(errno, "setgid", "%u", cfg->gid);
    if (cfg->has_uid && setresuid(cfg->uid, cfg->uid, cfg->uid) < 0)
        sv_fail(errno, "setuid", "%u", cfg->uid);
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
        sv_fail(errno, "prctl", "PR_SET_KEEPCAPS");
    if (cfg->has_caps)
        set_capabilities(cfg);
}

/* PDEATHSIG is cleared by credential changes, so it is set after them. The init's parent is the
 * supervisor; in a new pid namespace getppid() says 0 either way, so whether the supervisor still
 * lives is read off its end of the sync socket instead. */
static void set_parent_death_signal(uint32_t sig)
{
    if (sig == 0)
        return;
    if (prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) < 0)
        sv_fail(errno, "prctl", "PR_SET_PDEATHSIG");
    struct pollfd p = {.fd = sv_sync_fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP)))
        _exit(1);
}

/* close_range(CLOSE_RANGE_CLOEXEC), or one fd at a time where a seccomp profile (installed earlier
 * without no_new_privs) or an old kernel refuses it. */
static void mark_fds_cloexec(unsigned first)
{
    if (syscall(SYS_close_range, first, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return;
    if (errno != ENOSYS && errno != EPERM && errno != EINVAL)
        sv_fail(errno, "close_range", "%u..", first);
    struct rlimit lim;
    rlim_t last = getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < 1048576 ? lim.rlim_cur : 1048576;
    for (int fd = (int)first; (rlim_t)fd < last; fd++) {
        int flags = fcntl(fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC) && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
            sv_fail(errno, "set close-on-exec", "fd %d", fd);
    }
}

static int chdir_cwd(const char *cwd)
{
    if (cwd == NULL)
        return 0;
    return chdir(cwd) < 0 ? -1 : 0;
}

/* execve each candidate in turn, like execvp; returns the errno worth reporting. */
static int try_exec(const struct sv_config *cfg)
{
    int err = ENOENT, seen_eacces = 0;
    char *const *argv = (char *const *)cfg->argv;
    char *const *envp = (char *const *)cfg->envp;
    for (size_t i = 0; i < cfg->n_exec_paths; i++) {
        execve(cfg->exec_paths[i], argv, envp);
        err = errno;
        if (err == EACCES)
            seen_eacces = 1;
        else if (err != ENOENT && err != ENOTDIR)
            break;
    }
    if (seen_eacces && (err == ENOENT || err == ENOTDIR))
        err = EACCES;
    return err;
}

/* Setup is over: tell the supervisor, so that an end of stream without this message is an init that
 * died on the way (a crash, an OOM kill), never taken for a workload that runs. */
static void announce_exec(void)
{
    if (sv_sync_fd < 0)
        return; /* supervisor-oci's create heard it already (wait_for_start) */
    if (sv_send(SV_SYNC_EXEC, NULL, 0) < 0)
        _exit(1); /* the supervisor is gone */
}

__attribute__((noreturn))
static void exec_workload(const struct sv_config *cfg)
{
    sv_stage = SV_STAGE_EXEC;
    int err = try_exec(cfg);
    if (sv_sync_fd < 0) {
        /* After supervisor-oci's start nobody reads the sync socket: the workload's stderr it is. */
        dprintf(2, "supervisor-oci: exec \"%s\": %s\n", cfg->argv[0], strerror(err));
        _exit(err == ENOENT || err == ENOTDIR ? 127 : 126);
    }
    sv_fail(err, "exec", "%s", cfg->argv[0]);
}

/* -- the startContainer hooks ------------------------------------------------------------- */

/* Just before the workload, in the container (after pivot_root), with the workload's credentials and
 * its seccomp filter, as runc runs them (which installs the filter before the exec FIFO). */
static void run_start_hooks(const struct sv_config *cfg)
{
    if (cfg->n_start_hooks == 0)
        return;
    install_seccomp(cfg);
    sv_run_hooks("startContainer", cfg->start_hooks, cfg->n_start_hooks, cfg->start_state, cfg->state_tail, -1);
}

/* -- supervisor-oci: created, then started ------------------------------------------------- */

static void open_exec_fifo(const char *path)
{
    exec_fifo_fd = open(path, O_PATH | O_CLOEXEC);
    if (exec_fifo_fd < 0)
        sv_fail(errno, "open exec fifo", "%s", path);
}

/* runc's way of splitting create from start. EXEC and closing the sync socket tell `create` that the
 * container is set up (it then exits, and we belong to its caller's subreaper); reopening the FIFO
 * for writing blocks until `start` opens it for reading, and the byte we write is what `start` waits
 * for. The FIFO was opened O_PATH before pivot_root; /proc/self/fd reopens it from inside. */
static void wait_for_start(const struct sv_config *cfg)
{
    /* Fail now, while create still listens, rather than after start, when nobody does: runc looks
     * the program up before it reports ready, too. */
    int err = ENOENT;
    size_t i;
    for (i = 0; i < cfg->n_exec_paths; i++) {
        if (access(cfg->exec_paths[i], X_OK) == 0)
            break;
        if (errno == EACCES)
            err = EACCES;
    }
    if (i == cfg->n_exec_paths) {
        sv_stage = SV_STAGE_EXEC;
        sv_fail(err, "exec", "%s", cfg->argv[0]);
    }

    /* The container's /proc, checked like every /proc/self/fd path we use after pivot_root. */
    if (!is_procfs("/proc"))
        sv_fail(EXDEV, "open exec fifo", "/proc is not a procfs");
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", exec_fifo_fd);
    announce_exec();
    close(sv_sync_fd); /* sync: set up, waiting for start */
    sv_sync_fd = -1;
    int fd;
    do
        fd = open(path, O_WRONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        dprintf(2, "supervisor-oci: open exec fifo: %s\n", strerror(errno));
        _exit(1);
    }
    /* Started. The startContainer hooks run now, so that `start` hears how they did: a failure is
     * an error record on the FIFO in place of the byte. */
    if (cfg->n_start_hooks) {
        sv_sync_fd = fd;
        run_start_hooks(cfg);
        sv_sync_fd = -1;
    }
    if (write(fd, "0", 1) != 1)
        _exit(1); /* start went away before reading: it reports that itself */
    close(fd);
    close(exec_fifo_fd);
    exec_fifo_fd = -1;
}

/* The pid-1 init (what tini and bubblewrap do): the workload runs as our child; we forward every
 * signal to it, reap whatever else dies in the namespace, and exit with the workload's status
 * (128+N when signal N killed it: pid 1 cannot die of its own signal). The workload reports its own
 * exec failure as an error record, so the supervisor sees the same outcomes as without us. We run with the workload's credentials, under its
 * seccomp filter, not dumpable (no exec resets that), and close every descriptor once it runs: the
 * workload, root in the same namespaces, gets nothing from us through ptrace, /proc/1/mem,
 * /proc/1/fd or pidfd_getfd. */
__attribute__((noreturn))
static void run_pid1_init(const struct sv_config *cfg)
{
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    int go[2];
    if (pipe2(go, O_CLOEXEC) < 0)
        sv_fail(errno, "pipe", "pid-1 init");
    long child = syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, 0);
    if (child < 0)
        sv_fail(errno, "fork", "workload");
    if (child == 0) {
        /* Wait until our init holds nothing, then exec; a failure is ours to report on the sync
         * socket, which we still hold (close-on-exec) after the init let go of its own. */
        close(go[1]);
        char byte;
        while (read(go[0], &byte, 1) < 0 && errno == EINTR)
            ;
        close(go[0]);
        if (cfg->pdeathsig)
            prctl(PR_SET_PDEATHSIG, cfg->pdeathsig, 0, 0, 0);
        /* With a terminal, the workload leads its own process group, the terminal's foreground one
         * (SIGTTOU is still blocked here): what the terminal sends (^C, a resize) reaches it once,
         * not a second time through us. */
        if (cfg->terminal && (setpgid(0, 0) < 0 || tcsetpgrp(0, (pid_t)syscall(SYS_getpid)) < 0))
            sv_fail(errno, "make foreground", "the workload's process group");
        sigprocmask(SIG_SETMASK, &old, NULL);
        exec_workload(cfg);
    }
    announce_exec();
    /* Let go of everything (stdio, the sync socket, the go-ahead pipe, whose end of stream lets the
     * workload exec) before the workload runs: nothing of ours is in reach of /proc/1/fd. */
    sv_close_from(0, ~0U);
    close(go[1]); /* however close_range fared (a filter may fake its success) */
    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&all, &si);
        if (sig < 0 && errno == EINTR)
            continue;
        if (sig < 0) { /* a filter that refuses it: we cannot do our job, so end rather than spin */
            kill((pid_t)child, SIGKILL);
            _exit(255);
        }
        if (sig != SIGCHLD) {
            kill((pid_t)child, sig);
            continue;
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            if (pid == (pid_t)child)
                _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
        if (pid < 0 && errno != ECHILD && errno != EINTR)
            _exit(255); /* we cannot reap (a filter that refuses wait4): end rather than hang */
    }
}

void sv_run_init(const struct sv_config *cfg)
{
    wait_for_supervisor(); /* sync: maps written, cgroup and network ready */
    /* From here on nothing else may ptrace us or open our /proc files: the maps are written (a
     * rootless supervisor needed us dumpable for that), and what joins the container later is hostile.
     * execve makes the workload dumpable again, as it would be anywhere; the pid-1 init stays not. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        sv_fail(errno, "prctl", "PR_SET_DUMPABLE");
    fd_paths = is_procfs("/proc");
    cgroup_path = cfg->cgroup_path;
    if (cfg->exec_fifo)
        open_exec_fifo(cfg->exec_fifo);
    if (cfg->become_root) {
        if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
            sv_fail(errno, "become root", "in the user namespace");
    }
    if (setsid() < 0)
        sv_fail(errno, "setsid", "init");
    if (cfg->loopback_up)
        bring_up_loopback();
    if (cfg->n_create_hooks == 0)
        set_lsm_labels(cfg); /* else once the createContainer hooks ran (run_create_hooks) */
    umask(0); /* modes of what we create are the planned ones */
    sources_open(cfg);
    if (cfg->rootfs)
        prepare_root(cfg);
    for (size_t i = 0; i < cfg->n_steps; i++)
        run_step(cfg, i);
    sources_close(cfg);
    if (cfg->terminal)
        setup_console(cfg);
    if (cfg->hostname && sethostname(cfg->hostname, strlen(cfg->hostname)) < 0)
        sv_fail(errno, "sethostname", "%s", cfg->hostname);
    if (cfg->domainname && setdomainname(cfg->domainname, strlen(cfg->domainname)) < 0)
        sv_fail(errno, "setdomainname", "%s", cfg->domainname);
    set_rlimits(cfg);
    umask(cfg->has_umask ? cfg->umask : 022);
    if (cfg->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        sv_fail(errno, "prctl", "PR_SET_NO_NEW_PRIVS");
    /* cwd as root first: the user may lack search permission on the way there (runc does the same). */
    int cwd_later = chdir_cwd(cfg->cwd) < 0;
    if (cwd_later && errno != EACCES && errno != EPERM)
        sv_fail(errno, "chdir", "%s", cfg->cwd);
    if (!cfg->no_new_privs)
        install_seccomp(cfg); /* needs CAP_SYS_ADMIN without no_new_privs: before the caps go */
    set_credentials(cfg);
    if (cwd_later && chdir_cwd(cfg->cwd) < 0)
        sv_fail(errno, "chdir", "%s", cfg->cwd);
    char cwd[PATH_MAX];
    if (cfg->cwd && (getcwd(cwd, sizeof(cwd)) == NULL || cwd[0] != '/'))
        sv_fail(errno ? errno : ENOENT, "cwd outside the root", "%s", cfg->cwd); /* CVE-2024-21626 */
    set_parent_death_signal(cfg->pdeathsig);
    /* Only 0-2 reach the workload; the sync socket closes on exec, which tells the supervisor. */
    mark_fds_cloexec(3 + cfg->preserve_fds); /* and the fds --preserve-fds passes on */
    if (root_fd >= 0)
        close(root_fd);
    if (exec_fifo_fd >= 0)
        wait_for_start(cfg); /* announces the exec, closes the sync socket, runs the startContainer hooks */
    else
        run_start_hooks(cfg); /* before the announcement: a failure is a failed start */
    if (cfg->pid1_init) {
        if (cfg->no_new_privs)
            install_seccomp(cfg); /* ours too, inherited by the workload */
        run_pid1_init(cfg);
    }
    announce_exec();
    if (cfg->no_new_privs)
        install_seccomp(cfg); /* last: the profile need not allow what setup does */
    exec_workload(cfg);
}
