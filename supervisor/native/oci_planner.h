/* oci_planner.h - the planner's protocol: the one place its numbers are written.
 *
 * `supervisor-oci planner` (Python: supervisor/oci/planner.py) is an optional service that keeps the
 * Python planner imported and warm, listening on ROOT/planner.sock (SOCK_SEQPACKET, mode 0600). The
 * native front end (oci_fast.c) offers it each `create`; a fresh process would spend most of its
 * time importing. The front end stays the parent of everything the call spawns, so the container's
 * init is the caller's (the shim's) to reap, exactly as without the planner. The planner serves
 * only a caller of its own user, namespaces and root directory, no less privileged than itself; the
 * front end talks only to a planner of its own user (SO_PEERCRED):
 *
 *   front end -> planner   CALL     PROGRAM (absent: supervisor-oci), ARG..., ENV..., UMASK;
 *                                   fds: cwd (O_PATH), 0, 1, 2
 *   planner -> front end   DECLINE  nothing was done: run the Python command yourself
 *                          ACCEPT   PID: the worker that runs the call (forwarded signals go to it)
 *   then, any number of times, in any order:
 *   planner -> front end   SPAWN    ARG..., ENV..., FD...; fds: the program, then one per FD
 *   front end -> planner   SPAWNED  PID (its pidfd rides along), or ERRNO
 *   planner -> front end   WAIT     PID: a child of the front end's that has ended or will
 *   front end -> planner   WAITED   STATUS (waitpid's), or ERRNO; the child is reaped
 *   and last:
 *   planner -> front end   DONE     EXIT: the call's exit code; the front end reaps and leaves
 *
 * Each is one netlink message in the bootstrap message's encoding (nla.h), with a type of its own
 * and one attribute id space for all. The front end parses what the planner sends with nla.c's
 * walker, strictly; anything else, or the planner's end of the socket closing after ACCEPT and
 * before DONE, ends the call with an error once the front end has killed and reaped what it spawned
 * (closing before ACCEPT is a DECLINE).
 */
#ifndef SV_OCI_PLANNER_H
#define SV_OCI_PLANNER_H
#include "nla.h"
/* CFFI-BEGIN */

#define SV_PLAN_MSG_CALL 62010      /* nlmsg_types */
#define SV_PLAN_MSG_DECLINE 62011
#define SV_PLAN_MSG_SPAWN 62012
#define SV_PLAN_MSG_SPAWNED 62013
#define SV_PLAN_MSG_DONE 62014
#define SV_PLAN_MSG_ACCEPT 62015
#define SV_PLAN_MSG_WAIT 62016
#define SV_PLAN_MSG_WAITED 62017
#define SV_PLAN_MAX_MESSAGE 262144  /* bytes, any message */
#define SV_PLAN_MAX_ARGS 256        /* ARG, ENV and FD attributes of a SPAWN, each */

#define SV_PLAN_ATTR_ARG 1          /* str, repeated: CALL: the front end's argv[1:]; SPAWN: the argv */
#define SV_PLAN_ATTR_ENV 2          /* str, repeated: the environment, NAME=VALUE */
#define SV_PLAN_ATTR_UMASK 3        /* u32: CALL: the front end's umask */
#define SV_PLAN_ATTR_FD 4           /* u32, repeated: SPAWN: the number the program gets each passed
                                     * descriptor after the first at, in order; < 1024 */
#define SV_PLAN_ATTR_PID 5          /* u32: SPAWNED: the spawned process */
#define SV_PLAN_ATTR_ERRNO 6        /* u32: SPAWNED: fork or exec failed with this errno */
#define SV_PLAN_ATTR_EXIT 7         /* u32: DONE: the call's exit code, 0-255 */
#define SV_PLAN_ATTR_PROGRAM 8      /* str: CALL: whose command line ARG is: "supervisor" (the CLI's
                                     * one-shot run); absent: supervisor-oci's */
#define SV_PLAN_ATTR_STATUS 9       /* u32: WAITED: the status waitpid gave */
#define SV_PLAN_ATTR_MAX 9

/* A parsed SPAWN. Pointers point into the message's buffer, which must outlive it; argv and envp
 * end with NULL. */
struct sv_plan_spawn {
    const char *argv[SV_PLAN_MAX_ARGS + 1];
    const char *envp[SV_PLAN_MAX_ARGS + 1];
    uint32_t fds[SV_PLAN_MAX_ARGS];
    size_t n_fds;
};

/* Parse and validate a whole SPAWN (at least one ARG). 0 on success; -1 with a message in err. */
int sv_plan_parse_spawn(const uint8_t *msg, size_t len, struct sv_plan_spawn *out, char *err, size_t errlen);
/* Parse and validate a whole message of `type` that carries exactly one u32 attribute, `attr`, at
 * most `max` (DONE's EXIT, ACCEPT's and WAIT's PID). 0 on success; -1 with a message in err. */
int sv_plan_parse_u32(const uint8_t *msg, size_t len, uint16_t type, uint32_t attr, uint32_t max, uint32_t *value,
                      char *err, size_t errlen);
/* The socket's name below ROOT. */
const char *sv_plan_socket_name(void);
/* The payload type (SV_T_*) of an attribute, 0 when there is none; 1 when it may repeat. Python
 * builds its pyroute2 attribute map from these. */
int sv_plan_attr_type(uint32_t id);
int sv_plan_attr_repeats(uint32_t id);

/* CFFI-END */

/* The front end's side (oci_call.c): offer a call (argv[1:] of the front end) to the planner that
 * serves `root`. 0: there is none, or it declined, and nothing was done (run the Python command);
 * 1: it ran the call, whose exit code is in *code (what it spawned and has ended is reaped); -1: it
 * failed once something was spawned (a message in err; what was spawned is killed and reaped). */
int sv_plan_call(const char *root, char *const argv[], int *code, char *err, size_t errlen);

#endif
