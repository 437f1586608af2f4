/* bootstrap.h - what the bootstrap's stages share: the sync socket and the way they fail. */
#ifndef SV_BOOTSTRAP_H
#define SV_BOOTSTRAP_H
#include "wire.h"

/* The init socket (its number came in _LIBCONTAINER_INITPIPE) and the stage we are in, for errors. */
extern int sv_sync_fd;
extern uint32_t sv_stage;

/* Send one sync message; returns -1 if the supervisor is gone. */
int sv_send(uint32_t type, const void *payload, uint32_t len);
/* Send a message without payload that carries one file descriptor (SCM_RIGHTS). */
int sv_send_fd(uint32_t type, int fd);

/* Close descriptors FIRST..LAST: close_range where the kernel (and a seccomp filter) allows it, else one
 * at a time up to the fd limit. */
void sv_close_from(unsigned first, unsigned last);

/* Report a failure to the supervisor as a record (stage, errno, operation, object), then _exit(1).
 * The object is printf-formatted. */
__attribute__((noreturn, format(printf, 3, 4)))
void sv_fail(int err, const char *op, const char *fmt, ...);

/* Run one point's hooks (POINT is its name for errors: "createContainer", "startContainer") in order,
 * each with the state HEAD + our pid + TAIL on stdin, in the directory DIR_FD (-1: ours). Returns
 * when all of them succeeded; a failure is reported as an SV_STAGE_HOOK record and ends us. */
void sv_run_hooks(const char *point, const struct sv_hook *hooks, size_t n, const char *head, const char *tail,
                  int dir_fd);

/* The container init: everything from the sync with the supervisor to execve. Never returns. */
__attribute__((noreturn))
void sv_run_init(const struct sv_config *cfg);

#endif
