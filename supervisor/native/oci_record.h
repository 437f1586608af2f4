/* oci_record.h - supervisor-oci's state record, ROOT/ID/fast: the one place its numbers are written.
 *
 * `create` (Python: supervisor/oci/record.py) writes it beside state.json; the native front end
 * (oci_fast.c) reads it instead of state.json, so that it parses no text. It is one netlink message
 * in the bootstrap message's encoding (nla.h), of type SV_OCI_MSG_STATE, with attributes in an id
 * space of its own (below), unrelated to wire.h's. Python reads these constants through the cffi
 * module, as it reads wire.h's; the part between the CFFI markers is handed to cdef as it is.
 *
 * SV_OCI_ATTR_FORMAT must be SV_OCI_FORMAT. A record that does not parse whole - another format
 * (a new id is unknown here), a truncated or garbled file, or the line-based text file older
 * versions wrote (its first bytes are no valid header) - is refused, and the front end hands the call
 * to Python, which reads state.json. Change an attribute's meaning: bump SV_OCI_FORMAT.
 */
#ifndef SV_OCI_RECORD_H
#define SV_OCI_RECORD_H
#include "nla.h"
/* CFFI-BEGIN */

#define SV_OCI_MSG_STATE 62001      /* the record's nlmsg_type (the bootstrap's is 62000) */
#define SV_OCI_FORMAT 1             /* the value of SV_OCI_ATTR_FORMAT this reader knows */
#define SV_OCI_MAX_RECORD 262144    /* bytes; a longer file is refused */
#define SV_OCI_MAX_CGROUPS 16       /* SV_OCI_ATTR_CGROUP attributes; more are refused */

#define SV_OCI_ATTR_FORMAT 1        /* u32: SV_OCI_FORMAT; required */
#define SV_OCI_ATTR_PID 2           /* u32: the init's pid in the host's pid namespace; required, > 0 */
#define SV_OCI_ATTR_START 3         /* u64: the init's start time (field 22 of /proc/PID/stat), which
                                     * tells the init from a later process given its pid; required */
#define SV_OCI_ATTR_HOOKS 4         /* bool: the container has hooks (every call is then Python's) */
#define SV_OCI_ATTR_CGROUP 5        /* str, repeated: a cgroup directory of the container, in
                                     * state.json's order (removed at delete; cgroup.procs is read
                                     * from the first that has one) */
#define SV_OCI_ATTR_FREEZER_V1 6    /* str: the directory in the v1 freezer hierarchy, or */
#define SV_OCI_ATTR_FREEZER_V2 7    /* str: the v2 directory whose cgroup.freeze pauses it (one of
                                     * the two or neither: Python chose, see Container.freezer) */
#define SV_OCI_ATTR_STATE 8         /* bytes: the state document's fields other than pid and status,
                                     * as JSON text: what follows `{"pid": N, "status": "S", `,
                                     * closing brace included. Copied out, never parsed; absent when
                                     * too long for an attribute (`state` is then Python's) */
#define SV_OCI_ATTR_MAX 8

/* The decoded record. Pointers point into the record's buffer, which must outlive it. */
struct sv_oci_record {
    uint32_t pid;
    uint64_t start;
    int hooks;
    const char *cgroups[SV_OCI_MAX_CGROUPS];
    size_t n_cgroups;
    const char *freezer;        /* NULL: no freezer */
    uint32_t freezer_version;   /* 1 or 2 with a freezer, else 0 */
    const uint8_t *state;       /* NULL when absent */
    size_t state_len;
};

/* Parse and validate a whole record (header included). 0 on success; -1 with a message in err. */
int sv_oci_parse(const uint8_t *msg, size_t len, struct sv_oci_record *out, char *err, size_t errlen);
/* The payload type (SV_T_*) of an attribute, 0 when there is none; 1 when it may repeat. Python
 * builds its pyroute2 attribute map from these. */
int sv_oci_attr_type(uint32_t id);
int sv_oci_attr_repeats(uint32_t id);

/* CFFI-END */
#endif
