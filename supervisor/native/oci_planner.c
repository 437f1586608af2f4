/* oci_planner.c - reads what the planner sends the front end (oci_planner.h).
 *
 * As strict as the other parsers on nla.c's walker: an attribute that does not belong to the
 * message's type, a repeat of one that may not repeat, too many, a descriptor number out of range:
 * an error, and the front end acts on nothing it read. The same code runs in Python's tests through
 * cffi.
 */

#include "oci_planner.h"

static const struct sv_nla_def plan_attrs[SV_PLAN_ATTR_MAX + 1] = {
    [SV_PLAN_ATTR_ARG] = {SV_T_STR, 1},
    [SV_PLAN_ATTR_ENV] = {SV_T_STR, 1},
    [SV_PLAN_ATTR_UMASK] = {SV_T_U32, 0},
    [SV_PLAN_ATTR_FD] = {SV_T_U32, 1},
    [SV_PLAN_ATTR_PID] = {SV_T_U32, 0},
    [SV_PLAN_ATTR_ERRNO] = {SV_T_U32, 0},
    [SV_PLAN_ATTR_EXIT] = {SV_T_U32, 0},
    [SV_PLAN_ATTR_PROGRAM] = {SV_T_STR, 0},
    [SV_PLAN_ATTR_STATUS] = {SV_T_U32, 0},
};

const char *sv_plan_socket_name(void)
{
    return "planner.sock";
}

int sv_plan_attr_type(uint32_t id)
{
    return id >= 1 && id <= SV_PLAN_ATTR_MAX ? plan_attrs[id].type : 0;
}

int sv_plan_attr_repeats(uint32_t id)
{
    return id >= 1 && id <= SV_PLAN_ATTR_MAX ? plan_attrs[id].repeats : 0;
}

static int parse_spawn(const uint8_t *msg, size_t len, struct sv_plan_spawn *out, char *err, size_t errlen)
{
    if (sv_nlmsg_check(msg, len, SV_PLAN_MSG_SPAWN, SV_PLAN_MAX_MESSAGE, err, errlen) < 0)
        return -1;
    struct sv_nla_cursor c = {msg + SV_NLMSG_HDRLEN, msg + len};
    struct sv_nla a = {0, NULL, 0};
    size_t n_args = 0, n_env = 0;
    int r;
    while ((r = sv_nla_next(&c, plan_attrs, SV_PLAN_ATTR_MAX, 0, &a, err, errlen)) == 1) {
        switch (a.id) {
        case SV_PLAN_ATTR_ARG:
            if (n_args == SV_PLAN_MAX_ARGS)
                return sv_nla_fail(err, errlen, "more than %d arguments", SV_PLAN_MAX_ARGS);
            out->argv[n_args++] = str_of(&a);
            break;
        case SV_PLAN_ATTR_ENV:
            if (n_env == SV_PLAN_MAX_ARGS)
                return sv_nla_fail(err, errlen, "more than %d environment variables", SV_PLAN_MAX_ARGS);
            out->envp[n_env++] = str_of(&a);
            break;
        case SV_PLAN_ATTR_FD:
            if (out->n_fds == SV_PLAN_MAX_ARGS)
                return sv_nla_fail(err, errlen, "more than %d descriptors", SV_PLAN_MAX_ARGS);
            if (u32_of(&a) >= 1024)
                return sv_nla_fail(err, errlen, "descriptor number %u out of range", u32_of(&a));
            out->fds[out->n_fds++] = u32_of(&a);
            break;
        default:
            return sv_nla_fail(err, errlen, "attribute %u in a spawn", a.id);
        }
    }
    if (r < 0)
        return -1;
    if (n_args == 0)
        return sv_nla_fail(err, errlen, "a spawn without arguments");
    out->argv[n_args] = NULL;
    out->envp[n_env] = NULL;
    return 0;
}

int sv_plan_parse_spawn(const uint8_t *msg, size_t len, struct sv_plan_spawn *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (parse_spawn(msg, len, out, err, errlen) == 0)
        return 0;
    memset(out, 0, sizeof(*out)); /* nothing half-read reaches the caller */
    return -1;
}

int sv_plan_parse_u32(const uint8_t *msg, size_t len, uint16_t type, uint32_t attr, uint32_t max, uint32_t *value,
                      char *err, size_t errlen)
{
    if (sv_nlmsg_check(msg, len, type, SV_PLAN_MAX_MESSAGE, err, errlen) < 0)
        return -1;
    struct sv_nla_cursor c = {msg + SV_NLMSG_HDRLEN, msg + len};
    struct sv_nla a = {0, NULL, 0};
    int r, seen = 0;
    while ((r = sv_nla_next(&c, plan_attrs, SV_PLAN_ATTR_MAX, 0, &a, err, errlen)) == 1) {
        if (a.id != attr || seen)
            return sv_nla_fail(err, errlen, "attribute %u in a message of type %u", a.id, type);
        if (u32_of(&a) > max)
            return sv_nla_fail(err, errlen, "attribute %u: %u out of range", a.id, u32_of(&a));
        *value = u32_of(&a);
        seen = 1;
    }
    if (r < 0)
        return -1;
    if (!seen)
        return sv_nla_fail(err, errlen, "no attribute %u in a message of type %u", attr, type);
    return 0;
}
