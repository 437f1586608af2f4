/* bpf(2) helpers for cgroup v2 device programs (bpf.c); the declarations cffi reads are between
 * the markers, as in wire.h. */
#ifndef SV_BPF_H
#define SV_BPF_H
#include <stdint.h>

/* CFFI-BEGIN */
int sv_bpf_prog_load_device(const void *insns, uint32_t insn_cnt, const char *license, char *log,
                            uint32_t log_size);
int sv_bpf_attach_device(int cgroup_fd, int prog_fd, int replace_fd);
int sv_bpf_detach_device(int cgroup_fd, int prog_fd);
int sv_bpf_query_device(int cgroup_fd, uint32_t *ids, uint32_t *count);
int sv_bpf_prog_fd_by_id(uint32_t id);
int sv_bpf_prog_info(int prog_fd, uint32_t *type, uint32_t *id, uint8_t *tag);
/* CFFI-END */

#endif
