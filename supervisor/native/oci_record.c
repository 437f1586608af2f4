/* oci_record.c - reads and validates supervisor-oci's state record (oci_record.h).
 *
 * Strict as the bootstrap's parser is (they share nla.c's walker): an unknown or repeated attribute,
 * a payload of the wrong size, a string without its NUL, anything past the end, a missing pid or
 * start time, or another format is an error, and the caller acts on nothing it read. The same code
 * runs in Python's tests through cffi (golden vectors, fuzz).
 */

#include "oci_record.h"

static const struct sv_nla_def record_attrs[SV_OCI_ATTR_MAX + 1] = {
    [SV_OCI_ATTR_FORMAT] = {SV_T_U32, 0},
    [SV_OCI_ATTR_PID] = {SV_T_U32, 0},
    [SV_OCI_ATTR_START] = {SV_T_U64, 0},
    [SV_OCI_ATTR_HOOKS] = {SV_T_BOOL, 0},
    [SV_OCI_ATTR_CGROUP] = {SV_T_STR, 1},
    [SV_OCI_ATTR_FREEZER_V1] = {SV_T_STR, 0},
    [SV_OCI_ATTR_FREEZER_V2] = {SV_T_STR, 0},
    [SV_OCI_ATTR_STATE] = {SV_T_BYTES, 0},
};

_Static_assert(SV_OCI_ATTR_MAX < 64, "the seen-mask below has 64 bits");

int sv_oci_attr_type(uint32_t id)
{
    return id >= 1 && id <= SV_OCI_ATTR_MAX ? record_attrs[id].type : 0;
}

int sv_oci_attr_repeats(uint32_t id)
{
    return id >= 1 && id <= SV_OCI_ATTR_MAX ? record_attrs[id].repeats : 0;
}

#define SEEN(id) (1ull << (id))

static int parse(const uint8_t *msg, size_t len, struct sv_oci_record *out, char *err, size_t errlen)
{
    if (sv_nlmsg_check(msg, len, SV_OCI_MSG_STATE, SV_OCI_MAX_RECORD, err, errlen) < 0)
        return -1;
    struct sv_nla_cursor c = {msg + SV_NLMSG_HDRLEN, msg + len};
    struct sv_nla a = {0, NULL, 0};
    uint64_t seen = 0;
    uint32_t format = 0;
    int r;
    while ((r = sv_nla_next(&c, record_attrs, SV_OCI_ATTR_MAX, 0, &a, err, errlen)) == 1) {
        if (!record_attrs[a.id].repeats && (seen & SEEN(a.id)))
            return sv_nla_fail(err, errlen, "attribute %u repeated", a.id);
        seen |= SEEN(a.id);
        switch (a.id) {
        case SV_OCI_ATTR_FORMAT: format = u32_of(&a); break;
        case SV_OCI_ATTR_PID: out->pid = u32_of(&a); break;
        case SV_OCI_ATTR_START: out->start = u64_of(&a); break;
        case SV_OCI_ATTR_HOOKS: out->hooks = (int)u32_of(&a); break;
        case SV_OCI_ATTR_CGROUP:
            if (out->n_cgroups == SV_OCI_MAX_CGROUPS)
                return sv_nla_fail(err, errlen, "more than %d cgroup directories", SV_OCI_MAX_CGROUPS);
            out->cgroups[out->n_cgroups++] = str_of(&a);
            break;
        case SV_OCI_ATTR_FREEZER_V1:
        case SV_OCI_ATTR_FREEZER_V2:
            out->freezer = str_of(&a);
            out->freezer_version = a.id == SV_OCI_ATTR_FREEZER_V1 ? 1 : 2;
            break;
        case SV_OCI_ATTR_STATE:
            out->state = a.payload;
            out->state_len = a.len;
            break;
        }
    }
    if (r < 0)
        return -1;
    if (!(seen & SEEN(SV_OCI_ATTR_FORMAT)))
        return sv_nla_fail(err, errlen, "no format");
    if (format != SV_OCI_FORMAT)
        return sv_nla_fail(err, errlen, "format %u, not %u", format, SV_OCI_FORMAT);
    if (!(seen & SEEN(SV_OCI_ATTR_PID)) || out->pid == 0 || out->pid > INT32_MAX)
        return sv_nla_fail(err, errlen, "no pid, or pid %u out of range", out->pid);
    if (!(seen & SEEN(SV_OCI_ATTR_START)))
        return sv_nla_fail(err, errlen, "no start time");
    if ((seen & SEEN(SV_OCI_ATTR_FREEZER_V1)) && (seen & SEEN(SV_OCI_ATTR_FREEZER_V2)))
        return sv_nla_fail(err, errlen, "two freezers");
    return 0;
}

int sv_oci_parse(const uint8_t *msg, size_t len, struct sv_oci_record *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (parse(msg, len, out, err, errlen) == 0)
        return 0;
    memset(out, 0, sizeof(*out)); /* nothing half-read reaches the caller */
    return -1;
}
