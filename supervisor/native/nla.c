/* nla.c - the walker of nla.h: one netlink attribute at a time, within bounds, checked against a
 * table. Shared by the bootstrap's parser (parse.c) and supervisor-oci's state record (oci_record.c).
 */
#include <stdarg.h>
#include <stdio.h>

#include "nla.h"

int sv_nla_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

int sv_nlmsg_check(const uint8_t *msg, size_t len, uint16_t type, size_t max, char *err, size_t errlen)
{
    if (len < SV_NLMSG_HDRLEN)
        return sv_nla_fail(err, errlen, "message of %zu bytes is shorter than its header", len);
    if (len > max)
        return sv_nla_fail(err, errlen, "message of %zu bytes is over the limit", len);
    uint32_t nlmsg_len;
    uint16_t nlmsg_type;
    memcpy(&nlmsg_len, msg, 4);
    memcpy(&nlmsg_type, msg + 4, 2);
    if (nlmsg_type != type)
        return sv_nla_fail(err, errlen, "message type %u is not %u", nlmsg_type, type);
    if (nlmsg_len != len)
        return sv_nla_fail(err, errlen, "header says %u bytes, got %zu", nlmsg_len, len);
    return 0;
}

int sv_nla_next(struct sv_nla_cursor *c, const struct sv_nla_def *table, uint32_t max, uint32_t scope,
                struct sv_nla *a, char *err, size_t errlen)
{
    size_t left = (size_t)(c->end - c->pos);
    if (left == 0)
        return 0;
    if (left < SV_NLA_HDRLEN)
        return sv_nla_fail(err, errlen, "scope %u: %zu trailing bytes", scope, left);
    uint16_t nla_len, nla_type;
    memcpy(&nla_len, c->pos, 2);
    memcpy(&nla_type, c->pos + 2, 2);
    if (nla_len < SV_NLA_HDRLEN || nla_len > left)
        return sv_nla_fail(err, errlen, "scope %u: attribute %u: length %u out of bounds", scope,
                    nla_type & SV_NLA_TYPE_MASK, nla_len);
    a->id = nla_type & SV_NLA_TYPE_MASK;
    a->payload = c->pos + SV_NLA_HDRLEN;
    a->len = nla_len - SV_NLA_HDRLEN;
    if (a->id == 0 || a->id > max || table[a->id].type == 0)
        return sv_nla_fail(err, errlen, "scope %u: unknown attribute %u", scope, a->id);
    switch (table[a->id].type) {
    case SV_T_U32:
    case SV_T_BOOL:
        if (a->len != 4)
            return sv_nla_fail(err, errlen, "scope %u: attribute %u: want 4 bytes, got %u", scope, a->id, a->len);
        if (table[a->id].type == SV_T_BOOL && u32_of(a) > 1)
            return sv_nla_fail(err, errlen, "scope %u: attribute %u: bool is %u", scope, a->id, u32_of(a));
        break;
    case SV_T_U64:
        if (a->len != 8)
            return sv_nla_fail(err, errlen, "scope %u: attribute %u: want 8 bytes, got %u", scope, a->id, a->len);
        break;
    case SV_T_STR:
        if (a->len == 0 || a->payload[a->len - 1] != '\0' || memchr(a->payload, '\0', a->len) != a->payload + a->len - 1)
            return sv_nla_fail(err, errlen, "scope %u: attribute %u: not one NUL-terminated string", scope, a->id);
        break;
    default:
        break;
    }
    size_t step = SV_NLA_ALIGN((size_t)nla_len);
    c->pos += step < left ? step : left;
    return 1;
}
