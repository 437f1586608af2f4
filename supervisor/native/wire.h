/* wire.h - the bootstrap's wire format: the one place where its numbers are written down.
 *
 * Python reads every SV_* constant below through the cffi module (supervisor._native), so no id is
 * typed twice. The build script feeds the part between the CFFI markers to cffi's cdef as it is, which
 * is why that part holds only plain #defines with literal values, structs and prototypes.
 *
 * The bootstrap message is one netlink message (nlmsghdr + attributes), type SV_MSG_BOOTSTRAP and
 * runc's encodings (nla.h: u32 and u64 in host order, strings NUL-terminated, bools as a u32 0/1; its
 * SV_T_* name the payload types). Ids stay below 0x4000 because bits 14 and 15 of nla_type are netlink
 * flags. Attributes marked "repeated" may occur many times and keep their order; every other attribute
 * at most once. Nested attributes (a step, a namespace path, an rlimit) have their own id space.
 * supervisor-oci's state record uses the same encoding with ids of its own (oci_record.h).
 */
#ifndef SV_WIRE_H
#define SV_WIRE_H
#include <stdint.h>
#include <stddef.h>
/* CFFI-BEGIN */

#define SV_MSG_BOOTSTRAP 62000
#define SV_MAX_MESSAGE 1048576

/* top-level attributes */
#define SV_ATTR_CLONE_FLAGS 1       /* u32: CLONE_NEW* to create */
#define SV_ATTR_NS_PATH 2           /* nest, repeated: a namespace to join (SV_NS_*) */
#define SV_ATTR_OOM_SCORE_ADJ 3     /* u32 (an int32): written to /proc/self/oom_score_adj */
#define SV_ATTR_ROOTFS 4            /* str: host path of the root filesystem */
#define SV_ATTR_ROOT_PROPAGATION 5  /* u32: with a new mount namespace: propagation for "/", after which
                                     * the rootfs is bound onto itself (pivot_root needs a mount) */
#define SV_ATTR_STEP 6              /* nest, repeated: one filesystem step, in order (SV_STEP_*) */
#define SV_ATTR_HOSTNAME 7          /* str */
#define SV_ATTR_DOMAINNAME 8        /* str */
#define SV_ATTR_RLIMIT 9            /* nest, repeated (SV_RLIMIT_*) */
#define SV_ATTR_UMASK 10            /* u32 */
#define SV_ATTR_NO_NEW_PRIVS 11     /* bool */
#define SV_ATTR_UID 12              /* u32 */
#define SV_ATTR_GID 13              /* u32 */
#define SV_ATTR_SETGROUPS 14        /* bool: call setgroups() with the SV_ATTR_GROUP list (maybe empty) */
#define SV_ATTR_GROUP 15            /* u32, repeated: a supplementary group */
#define SV_ATTR_CAP_BOUNDING 16     /* u64 masks; all five or none */
#define SV_ATTR_CAP_EFFECTIVE 17
#define SV_ATTR_CAP_PERMITTED 18
#define SV_ATTR_CAP_INHERITABLE 19
#define SV_ATTR_CAP_AMBIENT 20
#define SV_ATTR_PDEATHSIG 21        /* u32: signal for PR_SET_PDEATHSIG */
#define SV_ATTR_CWD 22              /* str */
#define SV_ATTR_ARG 23              /* str, repeated: argv */
#define SV_ATTR_ENV 24              /* str, repeated: envp, each NAME=VALUE */
#define SV_ATTR_EXEC_PATH 25        /* str, repeated: candidates for execve, tried in order */
#define SV_ATTR_BECOME_ROOT 26      /* bool: setresuid/setresgid(0) once the maps are written */
#define SV_ATTR_ROOTFS_BIND 27      /* str: where the rootfs is bound before pivot_root, when not onto
                                     * itself: a bind over "/" would not change what "/" opens */
#define SV_ATTR_PID1_INIT 28        /* bool: stay as a minimal init (pid 1): forward signals to the
                                     * workload, reap orphans, exit with the workload's status */
#define SV_ATTR_LOOPBACK_UP 29      /* bool: bring "lo" up (a new network namespace has it down) */
#define SV_ATTR_SECCOMP 30          /* bytes: a BPF program (struct sock_filter[]), installed last */
#define SV_ATTR_SECCOMP_FLAGS 31    /* u32: SECCOMP_FILTER_FLAG_* */
#define SV_ATTR_APPARMOR 32         /* str: AppArmor profile for the workload's execve */
#define SV_ATTR_SELINUX 33          /* str: SELinux label for the workload's execve */
#define SV_ATTR_TERMINAL 34         /* bool: a pty from the container's devpts as stdio; its master
                                     * goes to the supervisor (SV_SYNC_CONSOLE) */
#define SV_ATTR_CGROUP_PATH 35      /* str: the container's cgroup, appended to the SRC of SV_STEP_CGROUP
                                     * steps, so the rest of the message is the same for every
                                     * container of a spec */
#define SV_ATTR_CONSOLE_SIZE 36     /* u32: the pty's window before the workload runs, height << 16 | width */
#define SV_ATTR_EXEC_FIFO 37        /* str: a FIFO (host path) the init opens for writing once it is set
                                     * up, after closing the sync socket: it waits there, before execve,
                                     * until a reader opens it (supervisor-oci's create and start). It
                                     * then runs the startContainer hooks and writes "0", or an
                                     * SV_SYNC_ERROR message (header and record) when they failed */
#define SV_ATTR_PRESERVE_FDS 38     /* u32: fds 3..3+N-1 go to the workload as they are (supervisor-oci's
                                     * --preserve-fds); stage 0 learns N from _SUPERVISOR_PRESERVE_FDS,
                                     * since it closes what it inherited before it reads this message */
#define SV_ATTR_CREATE_HOOK 39      /* nest, repeated: a createContainer hook (SV_HOOK_*), in order; they run
                                     * at the SV_OP_HOOKS step, in the container's namespaces before
                                     * pivot_root, with full privileges (the path is the host's) */
#define SV_ATTR_START_HOOK 40       /* nest, repeated: a startContainer hook, in order; they run once started
                                     * (after the exec FIFO opened), before execve, with the workload's
                                     * credentials and seccomp filter (the path is the container's) */
#define SV_ATTR_CREATE_STATE 41     /* str: the state JSON of createContainer hooks, up to its pid: the init
                                     * writes its own pid (as the container sees it), then SV_ATTR_STATE_TAIL */
#define SV_ATTR_START_STATE 42      /* str: the same for startContainer hooks */
#define SV_ATTR_STATE_TAIL 43       /* str: the rest of the state JSON after the pid, for both points */
#define SV_ATTR_MAX 43

/* SV_ATTR_NS_PATH */
#define SV_NS_TYPE 1                /* u32: the CLONE_NEW* flag of the namespace */
#define SV_NS_PATH 2                /* str */
#define SV_NS_MAX 2

/* SV_ATTR_RLIMIT */
#define SV_RLIMIT_RESOURCE 1        /* u32: RLIMIT_* */
#define SV_RLIMIT_SOFT 2            /* u64 */
#define SV_RLIMIT_HARD 3            /* u64 */
#define SV_RLIMIT_MAX 3

/* SV_ATTR_STEP fields */
#define SV_STEP_OP 1                /* u32: SV_OP_* */
#define SV_STEP_SRC 2               /* str */
#define SV_STEP_DST 3               /* str: absolute, resolved inside the container root */
#define SV_STEP_FSTYPE 4            /* str */
#define SV_STEP_FLAGS 5             /* u32: mount flags of the first mount(2) */
#define SV_STEP_REMOUNT_FLAGS 6     /* u32: flags of a bind remount after it (0: none) */
#define SV_STEP_PROPAGATION 7       /* u32: propagation flags applied last (0: none) */
#define SV_STEP_DATA 8              /* str: mount data, or the value of a sysctl */
#define SV_STEP_MODE 9              /* u32 */
#define SV_STEP_MAJOR 10            /* u32 */
#define SV_STEP_MINOR 11            /* u32 */
#define SV_STEP_UID 12              /* u32 */
#define SV_STEP_GID 13              /* u32 */
#define SV_STEP_MKTYPE 14           /* u32: SV_MK_*: what to create at DST when it is missing */
#define SV_STEP_CGROUP 15           /* bool: SRC is a hierarchy's base: append "/" SV_ATTR_CGROUP_PATH */
#define SV_STEP_MAX 15

/* SV_ATTR_CREATE_HOOK and SV_ATTR_START_HOOK fields */
#define SV_HOOK_PATH 1              /* str: absolute */
#define SV_HOOK_ARG 2               /* str, repeated: argv (at least one) */
#define SV_HOOK_ENV 3               /* str, repeated: envp, each NAME=VALUE */
#define SV_HOOK_TIMEOUT 4           /* u32: seconds before it is killed (absent: no limit) */
#define SV_HOOK_MAX 4

/* step operations */
#define SV_OP_MOUNT 1               /* mount SRC on DST (FSTYPE, FLAGS, DATA), then remount, propagation */
#define SV_OP_MKDIR 2               /* mkdir DST (MODE), parents too; an existing directory is fine */
#define SV_OP_SYMLINK 3             /* symlink DST -> SRC; an existing DST is left alone */
#define SV_OP_MKNOD 4               /* mknod DST (MODE with file type, MAJOR, MINOR), chown UID:GID */
#define SV_OP_BIND_DEV 5            /* bind the host device SRC over a new file DST (user namespaces) */
#define SV_OP_PIVOT 6               /* pivot_root into the root; later steps see the container's root */
#define SV_OP_CHROOT 7              /* chroot into the root (no mount namespace) */
#define SV_OP_REMOUNT_RO 8          /* make the mount at DST read-only, keeping its other flags */
#define SV_OP_READONLY 9            /* bind DST onto itself read-only; a missing DST is skipped */
#define SV_OP_MASK 10               /* hide DST: /dev/null over a file, an empty ro tmpfs over a dir */
#define SV_OP_SYSCTL 11             /* write DATA to /proc/sys/DST */
#define SV_OP_SETATTR_RO 12         /* mount_setattr(DST, AT_RECURSIVE, MOUNT_ATTR_RDONLY) */
#define SV_OP_PROPAGATE 13          /* set PROPAGATION on the mount at DST */
#define SV_OP_HOOKS 14              /* run the createContainer hooks (SV_ATTR_CREATE_HOOK) here */
#define SV_OP_MAX 14

#define SV_MK_NONE 0
#define SV_MK_DIR 1
#define SV_MK_FILE 2

/* The sync protocol on the init socket, after the bootstrap message.
 * Every message is a struct sv_sync_header followed by `len` bytes of payload. */
#define SV_SYNC_PID 1               /* bootstrap -> supervisor: u32 pid of the init (host pid ns) */
#define SV_SYNC_CONTINUE 2          /* supervisor -> init: host-side work is done, go on */
#define SV_SYNC_ERROR 3             /* bootstrap or init -> supervisor: struct sv_error_record + op\0 + object\0 */
#define SV_SYNC_CONSOLE 4           /* init -> supervisor: no payload; the pty master comes with it (SCM_RIGHTS) */
#define SV_SYNC_EXEC 5              /* init -> supervisor: no payload; set up, the workload's execve is next.
                                     * EOF without it means the init died during setup (a crash, an OOM
                                     * kill), never that the workload runs */

/* where an error happened */
#define SV_STAGE_PARSE 1            /* reading and validating the bootstrap message */
#define SV_STAGE_BOOTSTRAP 2        /* joining namespaces and cloning the init */
#define SV_STAGE_INIT 3             /* the container init, before execve */
#define SV_STAGE_EXEC 4             /* execve itself */
#define SV_STAGE_HOOK 5             /* a hook the init ran: OP is its point ("createContainer",
                                     * "startContainer"), OBJECT its path, and after the object's NUL
                                     * come a struct sv_hook_failure and what the hook printed */

struct sv_sync_header {
    uint32_t type;
    uint32_t len;
};

struct sv_error_record {
    uint32_t stage;
    int32_t err;
};

/* How a hook failed (SV_STAGE_HOOK). ERR of the record is set when it could not be run at all. */
struct sv_hook_failure {
    uint32_t index;             /* which hook of its point, from 0 */
    int32_t status;             /* its wait status; -1 when it did not run */
    uint32_t timed_out;         /* its timeout, in seconds, when it ran past it and was killed; else 0 */
};

/* The decoded message. Strings point into the message buffer, which must outlive it. */
struct sv_ns_path {
    uint32_t type;
    const char *path;
};

struct sv_rlimit {
    uint32_t resource;
    uint64_t soft;
    uint64_t hard;
};

struct sv_step {
    uint32_t op;
    const char *src;
    const char *dst;
    const char *fstype;
    const char *data;
    uint32_t flags;
    uint32_t remount_flags;
    uint32_t propagation;
    uint32_t mode;
    uint32_t major;
    uint32_t minor;
    uint32_t uid;
    uint32_t gid;
    uint32_t mktype;
    int cgroup;
};

struct sv_hook {
    const char *path;
    const char **argv;      /* NULL-terminated */
    size_t n_args;
    const char **envp;      /* NULL-terminated */
    size_t n_env;
    uint32_t timeout;       /* 0: none */
};

struct sv_config {
    uint32_t clone_flags;
    struct sv_ns_path *ns_paths;
    size_t n_ns_paths;
    int has_oom_score_adj;
    int32_t oom_score_adj;
    const char *rootfs;
    const char *rootfs_bind;
    uint32_t root_propagation;
    struct sv_step *steps;
    size_t n_steps;
    const char *hostname;
    const char *domainname;
    struct sv_rlimit *rlimits;
    size_t n_rlimits;
    int has_umask;
    uint32_t umask;
    int no_new_privs;
    int has_uid;
    uint32_t uid;
    int has_gid;
    uint32_t gid;
    int setgroups;
    uint32_t *groups;
    size_t n_groups;
    int has_caps;
    uint64_t cap_bounding;
    uint64_t cap_effective;
    uint64_t cap_permitted;
    uint64_t cap_inheritable;
    uint64_t cap_ambient;
    uint32_t pdeathsig;
    const char *cwd;
    int become_root;
    int pid1_init;
    int loopback_up;
    const uint8_t *seccomp;
    size_t seccomp_len;
    uint32_t seccomp_flags;
    const char *apparmor;
    const char *selinux;
    int terminal;
    int has_console_size;
    uint32_t console_size;
    const char *cgroup_path;
    const char *exec_fifo;
    uint32_t preserve_fds;
    const char **argv;      /* NULL-terminated */
    size_t n_args;
    const char **envp;      /* NULL-terminated */
    size_t n_env;
    const char **exec_paths;
    size_t n_exec_paths;
    struct sv_hook *create_hooks;
    size_t n_create_hooks;
    struct sv_hook *start_hooks;
    size_t n_start_hooks;
    const char *create_state;
    const char *start_state;
    const char *state_tail;
};

/* Parse and validate a whole message (header included). 0 on success; -1 with a message in err. */
int sv_parse(const uint8_t *msg, size_t len, struct sv_config *out, char *err, size_t errlen);
void sv_config_free(struct sv_config *cfg);
/* The payload type (SV_T_*) of an attribute in a scope (0: top level, else the nesting attribute's
 * id), or 0 when there is no such attribute. Python builds its pyroute2 attribute maps from this. */
int sv_attr_type(uint32_t scope, uint32_t id);
/* 1 when the attribute may repeat. */
int sv_attr_repeats(uint32_t scope, uint32_t id);

/* CFFI-END */
#endif
