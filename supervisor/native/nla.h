/* nla.h - netlink attributes, read one at a time within bounds and checked against a table.
 *
 * The encoding every message of ours uses (the bootstrap message, wire.h; supervisor-oci's state
 * record, oci_record.h): one netlink message, a struct nlmsghdr then attributes, each a 4-byte header
 * (nla_len, which counts the header, and nla_type) and its payload, padded to 4 bytes. Payloads are
 * runc's: u32 and u64 in host order, strings NUL-terminated (nla_len counts the NUL), bools a u32 0/1.
 * Ids stay below 0x4000: bits 14 and 15 of nla_type are netlink flags, masked off here. Each message
 * has its own id spaces; a table says, per id, the payload type and whether the id may repeat.
 *
 * This walker is the one parser of both: it checks the header, then hands out one attribute at a
 * time, never reading past the message, and refuses an unknown id or a payload that is not its
 * type's. What an attribute means is the caller's (parse.c, oci_record.c). The payload types between
 * the CFFI markers reach Python through the cffi module, as wire.h's constants do.
 */
#ifndef SV_NLA_H
#define SV_NLA_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
/* CFFI-BEGIN */

/* payload types, for the attribute tables */
#define SV_T_U32 1
#define SV_T_U64 2
#define SV_T_STR 3
#define SV_T_BOOL 4
#define SV_T_NEST 5
#define SV_T_BYTES 6

/* CFFI-END */

#define SV_NLMSG_HDRLEN 16
#define SV_NLA_HDRLEN 4
#define SV_NLA_ALIGN(n) (((n) + 3u) & ~3u)
#define SV_NLA_TYPE_MASK 0x3fffu

/* One entry of an attribute table, indexed by id: the payload type (SV_T_*; 0: no such id) and
 * whether the id may occur more than once. */
struct sv_nla_def {
    uint8_t type;
    uint8_t repeats;
};

/* An attribute that sv_nla_next checked: its payload lies inside the message and fits its type. */
struct sv_nla {
    uint32_t id;
    const uint8_t *payload;
    uint32_t len;
};

/* Where the walk is, and where its message (or nested attribute) ends. */
struct sv_nla_cursor {
    const uint8_t *pos;
    const uint8_t *end;
};

/* A whole message's header: at least the header's 16 bytes, at most `max`, of type `type`, and its
 * nlmsg_len is `len`. 0, or -1 with a message in err. */
/* Formats a parse error into err (as snprintf does) and returns -1, so a check can `return sv_nla_fail(...)`;
 * the parsers built on the walker report through it too. */
__attribute__((format(printf, 3, 4)))
int sv_nla_fail(char *err, size_t errlen, const char *fmt, ...);

int sv_nlmsg_check(const uint8_t *msg, size_t len, uint16_t type, size_t max, char *err, size_t errlen);

/* The next attribute of a walk over `table` (ids 1..max); `scope` only names the table in errors.
 * 1 when one was read, 0 at the end, -1 with a message in err. Repeats are the caller's to check. */
int sv_nla_next(struct sv_nla_cursor *c, const struct sv_nla_def *table, uint32_t max, uint32_t scope,
                struct sv_nla *a, char *err, size_t errlen);

/* Payloads of checked attributes (sv_nla_next has checked their sizes and NULs). */
static inline uint32_t u32_of(const struct sv_nla *a)
{
    uint32_t v;
    memcpy(&v, a->payload, 4);
    return v;
}

static inline uint64_t u64_of(const struct sv_nla *a)
{
    uint64_t v;
    memcpy(&v, a->payload, 8);
    return v;
}

static inline const char *str_of(const struct sv_nla *a)
{
    return (const char *)a->payload;
}

#endif
