/* parse.c - reads and validates the bootstrap message into a struct sv_config.
 *
 * Strict by design: an unknown attribute, a repeated single attribute, a payload of the wrong size, a
 * string without its NUL (or with one inside), an attribute that runs past the message, or a missing
 * required attribute is an error. Nothing here acts on the message; the bootstrap only acts on a
 * config that parsed whole. The same code runs in Python's tests through cffi (golden vectors, fuzz).
 */
#include <stdlib.h>
#include <string.h>

#include "nla.h"
#include "wire.h"

static const struct sv_nla_def top_attrs[SV_ATTR_MAX + 1] = {
    [SV_ATTR_CLONE_FLAGS] = {SV_T_U32, 0},
    [SV_ATTR_NS_PATH] = {SV_T_NEST, 1},
    [SV_ATTR_OOM_SCORE_ADJ] = {SV_T_U32, 0},
    [SV_ATTR_ROOTFS] = {SV_T_STR, 0},
    [SV_ATTR_ROOT_PROPAGATION] = {SV_T_U32, 0},
    [SV_ATTR_STEP] = {SV_T_NEST, 1},
    [SV_ATTR_HOSTNAME] = {SV_T_STR, 0},
    [SV_ATTR_DOMAINNAME] = {SV_T_STR, 0},
    [SV_ATTR_RLIMIT] = {SV_T_NEST, 1},
    [SV_ATTR_UMASK] = {SV_T_U32, 0},
    [SV_ATTR_NO_NEW_PRIVS] = {SV_T_BOOL, 0},
    [SV_ATTR_UID] = {SV_T_U32, 0},
    [SV_ATTR_GID] = {SV_T_U32, 0},
    [SV_ATTR_SETGROUPS] = {SV_T_BOOL, 0},
    [SV_ATTR_GROUP] = {SV_T_U32, 1},
    [SV_ATTR_CAP_BOUNDING] = {SV_T_U64, 0},
    [SV_ATTR_CAP_EFFECTIVE] = {SV_T_U64, 0},
    [SV_ATTR_CAP_PERMITTED] = {SV_T_U64, 0},
    [SV_ATTR_CAP_INHERITABLE] = {SV_T_U64, 0},
    [SV_ATTR_CAP_AMBIENT] = {SV_T_U64, 0},
    [SV_ATTR_PDEATHSIG] = {SV_T_U32, 0},
    [SV_ATTR_CWD] = {SV_T_STR, 0},
    [SV_ATTR_ARG] = {SV_T_STR, 1},
    [SV_ATTR_ENV] = {SV_T_STR, 1},
    [SV_ATTR_EXEC_PATH] = {SV_T_STR, 1},
    [SV_ATTR_BECOME_ROOT] = {SV_T_BOOL, 0},
    [SV_ATTR_ROOTFS_BIND] = {SV_T_STR, 0},
    [SV_ATTR_PID1_INIT] = {SV_T_BOOL, 0},
    [SV_ATTR_LOOPBACK_UP] = {SV_T_BOOL, 0},
    [SV_ATTR_SECCOMP] = {SV_T_BYTES, 0},
    [SV_ATTR_SECCOMP_FLAGS] = {SV_T_U32, 0},
    [SV_ATTR_APPARMOR] = {SV_T_STR, 0},
    [SV_ATTR_SELINUX] = {SV_T_STR, 0},
    [SV_ATTR_TERMINAL] = {SV_T_BOOL, 0},
    [SV_ATTR_CGROUP_PATH] = {SV_T_STR, 0},
    [SV_ATTR_CONSOLE_SIZE] = {SV_T_U32, 0},
    [SV_ATTR_EXEC_FIFO] = {SV_T_STR, 0},
    [SV_ATTR_PRESERVE_FDS] = {SV_T_U32, 0},
    [SV_ATTR_CREATE_HOOK] = {SV_T_NEST, 1},
    [SV_ATTR_START_HOOK] = {SV_T_NEST, 1},
    [SV_ATTR_CREATE_STATE] = {SV_T_STR, 0},
    [SV_ATTR_START_STATE] = {SV_T_STR, 0},
    [SV_ATTR_STATE_TAIL] = {SV_T_STR, 0},
};

static const struct sv_nla_def ns_attrs[SV_NS_MAX + 1] = {
    [SV_NS_TYPE] = {SV_T_U32, 0},
    [SV_NS_PATH] = {SV_T_STR, 0},
};

static const struct sv_nla_def rlimit_attrs[SV_RLIMIT_MAX + 1] = {
    [SV_RLIMIT_RESOURCE] = {SV_T_U32, 0},
    [SV_RLIMIT_SOFT] = {SV_T_U64, 0},
    [SV_RLIMIT_HARD] = {SV_T_U64, 0},
};

static const struct sv_nla_def step_attrs[SV_STEP_MAX + 1] = {
    [SV_STEP_OP] = {SV_T_U32, 0},
    [SV_STEP_SRC] = {SV_T_STR, 0},
    [SV_STEP_DST] = {SV_T_STR, 0},
    [SV_STEP_FSTYPE] = {SV_T_STR, 0},
    [SV_STEP_FLAGS] = {SV_T_U32, 0},
    [SV_STEP_REMOUNT_FLAGS] = {SV_T_U32, 0},
    [SV_STEP_PROPAGATION] = {SV_T_U32, 0},
    [SV_STEP_DATA] = {SV_T_STR, 0},
    [SV_STEP_MODE] = {SV_T_U32, 0},
    [SV_STEP_MAJOR] = {SV_T_U32, 0},
    [SV_STEP_MINOR] = {SV_T_U32, 0},
    [SV_STEP_UID] = {SV_T_U32, 0},
    [SV_STEP_GID] = {SV_T_U32, 0},
    [SV_STEP_MKTYPE] = {SV_T_U32, 0},
    [SV_STEP_CGROUP] = {SV_T_BOOL, 0},
};

static const struct sv_nla_def hook_attrs[SV_HOOK_MAX + 1] = {
    [SV_HOOK_PATH] = {SV_T_STR, 0},
    [SV_HOOK_ARG] = {SV_T_STR, 1},
    [SV_HOOK_ENV] = {SV_T_STR, 1},
    [SV_HOOK_TIMEOUT] = {SV_T_U32, 0},
};

static const struct sv_nla_def *scope_table(uint32_t scope, uint32_t *max)
{
    switch (scope) {
    case 0: *max = SV_ATTR_MAX; return top_attrs;
    case SV_ATTR_NS_PATH: *max = SV_NS_MAX; return ns_attrs;
    case SV_ATTR_RLIMIT: *max = SV_RLIMIT_MAX; return rlimit_attrs;
    case SV_ATTR_STEP: *max = SV_STEP_MAX; return step_attrs;
    case SV_ATTR_CREATE_HOOK:
    case SV_ATTR_START_HOOK: *max = SV_HOOK_MAX; return hook_attrs;
    default: *max = 0; return NULL;
    }
}

static const struct sv_nla_def *lookup(uint32_t scope, uint32_t id)
{
    uint32_t max;
    const struct sv_nla_def *table = scope_table(scope, &max);
    if (table == NULL || id == 0 || id > max || table[id].type == 0)
        return NULL;
    return &table[id];
}

int sv_attr_type(uint32_t scope, uint32_t id)
{
    const struct sv_nla_def *def = lookup(scope, id);
    return def ? def->type : 0;
}

int sv_attr_repeats(uint32_t scope, uint32_t id)
{
    const struct sv_nla_def *def = lookup(scope, id);
    return def ? def->repeats : 0;
}

/* Next attribute of a scope: 1 when one was read, 0 at the end, -1 on error. */
static int next_attr(struct sv_nla_cursor *c, uint32_t scope, struct sv_nla *a, char *err, size_t errlen)
{
    uint32_t max;
    const struct sv_nla_def *table = scope_table(scope, &max);
    return sv_nla_next(c, table, max, scope, a, err, errlen);
}

/* Walks one nested attribute: checks repeats (of what may not repeat) and hands each field to `field`. */
typedef int (*field_fn)(void *obj, const struct sv_nla *a);

static int walk_nested(const struct sv_nla *outer, void *obj, field_fn field, char *err, size_t errlen)
{
    struct sv_nla_cursor c = {outer->payload, outer->payload + outer->len};
    uint64_t seen = 0;
    struct sv_nla a = {0, NULL, 0};
    int r;
    while ((r = next_attr(&c, outer->id, &a, err, errlen)) == 1) {
        if ((seen & (1ull << a.id)) && !sv_attr_repeats(outer->id, a.id))
            return sv_nla_fail(err, errlen, "scope %u: attribute %u repeated", outer->id, a.id);
        seen |= 1ull << a.id;
        field(obj, &a);
    }
    return r;
}

static int ns_field(void *obj, const struct sv_nla *a)
{
    struct sv_ns_path *ns = obj;
    if (a->id == SV_NS_TYPE)
        ns->type = u32_of(a);
    else
        ns->path = str_of(a);
    return 0;
}

static int rlimit_field(void *obj, const struct sv_nla *a)
{
    struct sv_rlimit *rl = obj;
    switch (a->id) {
    case SV_RLIMIT_RESOURCE: rl->resource = u32_of(a); break;
    case SV_RLIMIT_SOFT: rl->soft = u64_of(a); break;
    case SV_RLIMIT_HARD: rl->hard = u64_of(a); break;
    }
    return 0;
}

static int step_field(void *obj, const struct sv_nla *a)
{
    struct sv_step *s = obj;
    switch (a->id) {
    case SV_STEP_OP: s->op = u32_of(a); break;
    case SV_STEP_SRC: s->src = str_of(a); break;
    case SV_STEP_DST: s->dst = str_of(a); break;
    case SV_STEP_FSTYPE: s->fstype = str_of(a); break;
    case SV_STEP_FLAGS: s->flags = u32_of(a); break;
    case SV_STEP_REMOUNT_FLAGS: s->remount_flags = u32_of(a); break;
    case SV_STEP_PROPAGATION: s->propagation = u32_of(a); break;
    case SV_STEP_DATA: s->data = str_of(a); break;
    case SV_STEP_MODE: s->mode = u32_of(a); break;
    case SV_STEP_MAJOR: s->major = u32_of(a); break;
    case SV_STEP_MINOR: s->minor = u32_of(a); break;
    case SV_STEP_UID: s->uid = u32_of(a); break;
    case SV_STEP_GID: s->gid = u32_of(a); break;
    case SV_STEP_MKTYPE: s->mktype = u32_of(a); break;
    case SV_STEP_CGROUP: s->cgroup = (int)u32_of(a); break;
    }
    return 0;
}

/* A hook is read twice: once to count its argv and envp, once to fill them in. */
static int hook_count(void *obj, const struct sv_nla *a)
{
    struct sv_hook *h = obj;
    if (a->id == SV_HOOK_ARG)
        h->n_args++;
    else if (a->id == SV_HOOK_ENV)
        h->n_env++;
    return 0;
}

static int hook_field(void *obj, const struct sv_nla *a)
{
    struct sv_hook *h = obj;
    switch (a->id) {
    case SV_HOOK_PATH: h->path = str_of(a); break;
    case SV_HOOK_ARG: h->argv[h->n_args++] = str_of(a); break;
    case SV_HOOK_ENV: h->envp[h->n_env++] = str_of(a); break;
    case SV_HOOK_TIMEOUT: h->timeout = u32_of(a); break;
    }
    return 0;
}

static int parse_hook(const struct sv_nla *outer, struct sv_hook *h, size_t i, char *err, size_t errlen)
{
    if (walk_nested(outer, h, hook_count, err, errlen) < 0)
        return -1;
    h->argv = calloc(h->n_args + 1, sizeof(*h->argv));
    h->envp = calloc(h->n_env + 1, sizeof(*h->envp));
    if (h->argv == NULL || h->envp == NULL)
        return sv_nla_fail(err, errlen, "out of memory");
    h->n_args = h->n_env = 0;
    walk_nested(outer, h, hook_field, err, errlen);
    const char *kind = outer->id == SV_ATTR_CREATE_HOOK ? "createContainer" : "startContainer";
    if (h->path == NULL || h->path[0] != '/')
        return sv_nla_fail(err, errlen, "%s hook %zu: needs an absolute path", kind, i);
    if (h->n_args == 0)
        return sv_nla_fail(err, errlen, "%s hook %zu: no argv", kind, i);
    return 0;
}

/* What each step operation needs; checked here so the executor can trust it. */
static int check_step(const struct sv_step *s, size_t i, char *err, size_t errlen)
{
    int need_dst = 1, need_src = 0;
    switch (s->op) {
    case SV_OP_MOUNT: need_src = s->fstype == NULL; break;
    case SV_OP_SYMLINK: need_src = 1; break;
    case SV_OP_BIND_DEV: need_src = 1; break;
    case SV_OP_SYSCTL:
        if (s->data == NULL)
            return sv_nla_fail(err, errlen, "step %zu: sysctl without a value", i);
        break;
    case SV_OP_PIVOT:
    case SV_OP_CHROOT:
    case SV_OP_HOOKS: need_dst = 0; break;
    case SV_OP_MKDIR:
    case SV_OP_MKNOD:
    case SV_OP_REMOUNT_RO:
    case SV_OP_READONLY:
    case SV_OP_MASK:
    case SV_OP_SETATTR_RO:
    case SV_OP_PROPAGATE: break;
    default:
        return sv_nla_fail(err, errlen, "step %zu: unknown operation %u", i, s->op);
    }
    if (need_dst && s->dst == NULL)
        return sv_nla_fail(err, errlen, "step %zu: operation %u without a destination", i, s->op);
    if (need_dst && s->dst[0] != '/' && s->op != SV_OP_SYSCTL)
        return sv_nla_fail(err, errlen, "step %zu: destination \"%s\" is not absolute", i, s->dst);
    if (need_src && s->src == NULL)
        return sv_nla_fail(err, errlen, "step %zu: operation %u without a source", i, s->op);
    if (s->mktype > SV_MK_FILE)
        return sv_nla_fail(err, errlen, "step %zu: unknown mktype %u", i, s->mktype);
    return 0;
}

int sv_parse(const uint8_t *msg, size_t len, struct sv_config *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (sv_nlmsg_check(msg, len, SV_MSG_BOOTSTRAP, SV_MAX_MESSAGE, err, errlen) < 0)
        return -1;

    /* First pass: validate every attribute and count the repeated ones. */
    struct sv_nla_cursor c = {msg + SV_NLMSG_HDRLEN, msg + len};
    struct sv_nla a = {0, NULL, 0};
    uint64_t seen = 0;
    int r;
    while ((r = next_attr(&c, 0, &a, err, errlen)) == 1) {
        if (!top_attrs[a.id].repeats && (seen & (1ull << a.id)))
            return sv_nla_fail(err, errlen, "attribute %u repeated", a.id);
        seen |= 1ull << a.id;
        switch (a.id) {
        case SV_ATTR_NS_PATH: out->n_ns_paths++; break;
        case SV_ATTR_STEP: out->n_steps++; break;
        case SV_ATTR_RLIMIT: out->n_rlimits++; break;
        case SV_ATTR_GROUP: out->n_groups++; break;
        case SV_ATTR_ARG: out->n_args++; break;
        case SV_ATTR_ENV: out->n_env++; break;
        case SV_ATTR_EXEC_PATH: out->n_exec_paths++; break;
        case SV_ATTR_CREATE_HOOK: out->n_create_hooks++; break;
        case SV_ATTR_START_HOOK: out->n_start_hooks++; break;
        }
    }
    if (r < 0)
        return -1;
    if (out->n_args == 0)
        return sv_nla_fail(err, errlen, "no argv");
    if (out->n_exec_paths == 0)
        return sv_nla_fail(err, errlen, "no path to execute");
    uint64_t caps = (1ull << SV_ATTR_CAP_BOUNDING) | (1ull << SV_ATTR_CAP_EFFECTIVE) |
                    (1ull << SV_ATTR_CAP_PERMITTED) | (1ull << SV_ATTR_CAP_INHERITABLE) |
                    (1ull << SV_ATTR_CAP_AMBIENT);
    if ((seen & caps) != 0 && (seen & caps) != caps)
        return sv_nla_fail(err, errlen, "capability sets must come all five or none");
    if ((seen & (1ull << SV_ATTR_GROUP)) && !(seen & (1ull << SV_ATTR_SETGROUPS)))
        return sv_nla_fail(err, errlen, "supplementary groups without setgroups");

    out->ns_paths = calloc(out->n_ns_paths + 1, sizeof(*out->ns_paths));
    out->steps = calloc(out->n_steps + 1, sizeof(*out->steps));
    out->rlimits = calloc(out->n_rlimits + 1, sizeof(*out->rlimits));
    out->groups = calloc(out->n_groups + 1, sizeof(*out->groups));
    out->argv = calloc(out->n_args + 1, sizeof(*out->argv));
    out->envp = calloc(out->n_env + 1, sizeof(*out->envp));
    out->exec_paths = calloc(out->n_exec_paths + 1, sizeof(*out->exec_paths));
    out->create_hooks = calloc(out->n_create_hooks + 1, sizeof(*out->create_hooks));
    out->start_hooks = calloc(out->n_start_hooks + 1, sizeof(*out->start_hooks));
    if (!out->ns_paths || !out->steps || !out->rlimits || !out->groups || !out->argv || !out->envp ||
        !out->exec_paths || !out->create_hooks || !out->start_hooks) {
        sv_config_free(out);
        return sv_nla_fail(err, errlen, "out of memory");
    }

    /* Second pass: fill in. */
    size_t ns = 0, st = 0, rl = 0, gr = 0, ar = 0, en = 0, ex = 0, ch = 0, sh = 0;
    c.pos = msg + SV_NLMSG_HDRLEN;
    while (next_attr(&c, 0, &a, err, errlen) == 1) {
        switch (a.id) {
        case SV_ATTR_CLONE_FLAGS: out->clone_flags = u32_of(&a); break;
        case SV_ATTR_NS_PATH: {
            struct sv_ns_path *p = &out->ns_paths[ns++];
            if (walk_nested(&a, p, ns_field, err, errlen) < 0)
                goto bad;
            if (p->type == 0 || p->path == NULL) {
                sv_nla_fail(err, errlen, "namespace path %zu: needs a type and a path", ns - 1);
                goto bad;
            }
            break;
        }
        case SV_ATTR_OOM_SCORE_ADJ:
            out->has_oom_score_adj = 1;
            out->oom_score_adj = (int32_t)u32_of(&a);
            break;
        case SV_ATTR_ROOTFS: out->rootfs = str_of(&a); break;
        case SV_ATTR_ROOT_PROPAGATION: out->root_propagation = u32_of(&a); break;
        case SV_ATTR_STEP: {
            struct sv_step *s = &out->steps[st++];
            if (walk_nested(&a, s, step_field, err, errlen) < 0 || check_step(s, st - 1, err, errlen) < 0)
                goto bad;
            break;
        }
        case SV_ATTR_HOSTNAME: out->hostname = str_of(&a); break;
        case SV_ATTR_DOMAINNAME: out->domainname = str_of(&a); break;
        case SV_ATTR_RLIMIT: {
            struct sv_rlimit *l = &out->rlimits[rl++];
            l->resource = UINT32_MAX;
            if (walk_nested(&a, l, rlimit_field, err, errlen) < 0)
                goto bad;
            if (l->resource == UINT32_MAX || l->soft > l->hard) {
                sv_nla_fail(err, errlen, "rlimit %zu: needs a resource and soft <= hard", rl - 1);
                goto bad;
            }
            break;
        }
        case SV_ATTR_UMASK:
            out->has_umask = 1;
            out->umask = u32_of(&a);
            if (out->umask > 0777) {
                sv_nla_fail(err, errlen, "umask %o out of range", out->umask);
                goto bad;
            }
            break;
        case SV_ATTR_NO_NEW_PRIVS: out->no_new_privs = (int)u32_of(&a); break;
        case SV_ATTR_UID: out->has_uid = 1; out->uid = u32_of(&a); break;
        case SV_ATTR_GID: out->has_gid = 1; out->gid = u32_of(&a); break;
        case SV_ATTR_SETGROUPS: out->setgroups = (int)u32_of(&a); break;
        case SV_ATTR_GROUP: out->groups[gr++] = u32_of(&a); break;
        case SV_ATTR_CAP_BOUNDING: out->has_caps = 1; out->cap_bounding = u64_of(&a); break;
        case SV_ATTR_CAP_EFFECTIVE: out->cap_effective = u64_of(&a); break;
        case SV_ATTR_CAP_PERMITTED: out->cap_permitted = u64_of(&a); break;
        case SV_ATTR_CAP_INHERITABLE: out->cap_inheritable = u64_of(&a); break;
        case SV_ATTR_CAP_AMBIENT: out->cap_ambient = u64_of(&a); break;
        case SV_ATTR_PDEATHSIG:
            out->pdeathsig = u32_of(&a);
            if (out->pdeathsig > 64) {
                sv_nla_fail(err, errlen, "pdeathsig %u out of range", out->pdeathsig);
                goto bad;
            }
            break;
        case SV_ATTR_CWD: out->cwd = str_of(&a); break;
        case SV_ATTR_ARG: out->argv[ar++] = str_of(&a); break;
        case SV_ATTR_ENV: out->envp[en++] = str_of(&a); break;
        case SV_ATTR_EXEC_PATH: out->exec_paths[ex++] = str_of(&a); break;
        case SV_ATTR_BECOME_ROOT: out->become_root = (int)u32_of(&a); break;
        case SV_ATTR_ROOTFS_BIND: out->rootfs_bind = str_of(&a); break;
        case SV_ATTR_PID1_INIT: out->pid1_init = (int)u32_of(&a); break;
        case SV_ATTR_LOOPBACK_UP: out->loopback_up = (int)u32_of(&a); break;
        case SV_ATTR_SECCOMP:
            /* whole BPF instructions, at most the kernel's BPF_MAXINSNS */
            if (a.len == 0 || a.len % 8 != 0 || a.len / 8 > 4096) {
                sv_nla_fail(err, errlen, "seccomp program of %u bytes", a.len);
                goto bad;
            }
            out->seccomp = a.payload;
            out->seccomp_len = a.len;
            break;
        case SV_ATTR_SECCOMP_FLAGS: out->seccomp_flags = u32_of(&a); break;
        case SV_ATTR_APPARMOR: out->apparmor = str_of(&a); break;
        case SV_ATTR_SELINUX: out->selinux = str_of(&a); break;
        case SV_ATTR_TERMINAL: out->terminal = (int)u32_of(&a); break;
        case SV_ATTR_CGROUP_PATH: out->cgroup_path = str_of(&a); break;
        case SV_ATTR_CONSOLE_SIZE:
            out->has_console_size = 1;
            out->console_size = u32_of(&a);
            break;
        case SV_ATTR_EXEC_FIFO: out->exec_fifo = str_of(&a); break;
        case SV_ATTR_PRESERVE_FDS: out->preserve_fds = u32_of(&a); break;
        case SV_ATTR_CREATE_HOOK:
            if (parse_hook(&a, &out->create_hooks[ch], ch, err, errlen) < 0)
                goto bad;
            ch++;
            break;
        case SV_ATTR_START_HOOK:
            if (parse_hook(&a, &out->start_hooks[sh], sh, err, errlen) < 0)
                goto bad;
            sh++;
            break;
        case SV_ATTR_CREATE_STATE: out->create_state = str_of(&a); break;
        case SV_ATTR_START_STATE: out->start_state = str_of(&a); break;
        case SV_ATTR_STATE_TAIL: out->state_tail = str_of(&a); break;
        }
    }
    for (size_t i = 0; i < out->n_steps; i++) {
        if (out->steps[i].cgroup && (out->cgroup_path == NULL || out->steps[i].src == NULL)) {
            sv_nla_fail(err, errlen, "step %zu: a cgroup bind without a cgroup path", i);
            goto bad;
        }
    }
    size_t hook_steps = 0;
    for (size_t i = 0; i < out->n_steps; i++)
        hook_steps += out->steps[i].op == SV_OP_HOOKS;
    if (out->n_steps > hook_steps && out->rootfs == NULL) {
        sv_nla_fail(err, errlen, "filesystem steps without a rootfs");
        goto bad;
    }
    /* createContainer hooks run at their step, exactly once; each point's hooks get their state. */
    if (hook_steps != (out->n_create_hooks > 0)) {
        sv_nla_fail(err, errlen, "%zu hook steps for %zu createContainer hooks", hook_steps, out->n_create_hooks);
        goto bad;
    }
    if ((out->n_create_hooks && (!out->create_state || !out->state_tail)) ||
        (out->n_start_hooks && (!out->start_state || !out->state_tail))) {
        sv_nla_fail(err, errlen, "hooks without their state");
        goto bad;
    }
    return 0;
bad:
    sv_config_free(out);
    return -1;
}

void sv_config_free(struct sv_config *cfg)
{
    free(cfg->ns_paths);
    free(cfg->steps);
    free(cfg->rlimits);
    free(cfg->groups);
    free((void *)cfg->argv);
    free((void *)cfg->envp);
    free((void *)cfg->exec_paths);
    for (size_t i = 0; cfg->create_hooks != NULL && i < cfg->n_create_hooks; i++) {
        free((void *)cfg->create_hooks[i].argv);
        free((void *)cfg->create_hooks[i].envp);
    }
    for (size_t i = 0; cfg->start_hooks != NULL && i < cfg->n_start_hooks; i++) {
        free((void *)cfg->start_hooks[i].argv);
        free((void *)cfg->start_hooks[i].envp);
    }
    free(cfg->create_hooks);
    free(cfg->start_hooks);
    memset(cfg, 0, sizeof(*cfg));
}
