/* bpf(2) for the supervisor's cgroup v2 device programs, through cffi (supervisor/native/build.py).
 *
 * The program itself is emitted by supervisor/devices.py; these helpers only fill `union bpf_attr`
 * (whose anonymous members cffi cannot describe) and make the call. Each returns what bpf(2) returns:
 * -1 with errno set on failure, which the Python side turns into an OSError.
 */
#include <linux/bpf.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bpf.h"

static int sys_bpf(int cmd, union bpf_attr *attr)
{
    return (int)syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

int sv_bpf_prog_load_device(const void *insns, uint32_t insn_cnt, const char *license, char *log,
                            uint32_t log_size)
{
    union bpf_attr attr;

    memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    attr.insns = (uint64_t)(uintptr_t)insns;
    attr.insn_cnt = insn_cnt;
    attr.license = (uint64_t)(uintptr_t)license;
    if (log != NULL && log_size > 0) {
        attr.log_level = 1;
        attr.log_buf = (uint64_t)(uintptr_t)log;
        attr.log_size = log_size;
    }
    return sys_bpf(BPF_PROG_LOAD, &attr);
}

int sv_bpf_attach_device(int cgroup_fd, int prog_fd, int replace_fd)
{
    union bpf_attr attr;

    memset(&attr, 0, sizeof(attr));
    attr.target_fd = (uint32_t)cgroup_fd;
    attr.attach_bpf_fd = (uint32_t)prog_fd;
    attr.attach_type = BPF_CGROUP_DEVICE;
    /* ALLOW_MULTI: the programs of the cgroups above (a systemd slice's, say) keep running too */
    attr.attach_flags = BPF_F_ALLOW_MULTI;
    if (replace_fd >= 0) {
        attr.attach_flags |= BPF_F_REPLACE;
        attr.replace_bpf_fd = (uint32_t)replace_fd;
    }
    return sys_bpf(BPF_PROG_ATTACH, &attr);
}

int sv_bpf_detach_device(int cgroup_fd, int prog_fd)
{
    union bpf_attr attr;

    memset(&attr, 0, sizeof(attr));
    attr.target_fd = (uint32_t)cgroup_fd;
    attr.attach_bpf_fd = (uint32_t)prog_fd;
    attr.attach_type = BPF_CGROUP_DEVICE;
    return sys_bpf(BPF_PROG_DETACH, &attr);
}

int sv_bpf_query_device(int cgroup_fd, uint32_t *ids, uint32_t *count)
{
    union bpf_attr attr;
    int ret;

    memset(&attr, 0, sizeof(attr));
    attr.query.target_fd = (uint32_t)cgroup_fd;
    attr.query.attach_type = BPF_CGROUP_DEVICE;
    attr.query.prog_ids = (uint64_t)(uintptr_t)ids;
    attr.query.prog_cnt = *count;
    ret = sys_bpf(BPF_PROG_QUERY, &attr);
    *count = attr.query.prog_cnt;
    return ret;
}

int sv_bpf_prog_fd_by_id(uint32_t id)
{
    union bpf_attr attr;

    memset(&attr, 0, sizeof(attr));
    attr.prog_id = id;
    return sys_bpf(BPF_PROG_GET_FD_BY_ID, &attr);
}

int sv_bpf_prog_info(int prog_fd, uint32_t *type, uint32_t *id, uint8_t *tag)
{
    struct bpf_prog_info info;
    union bpf_attr attr;
    int ret;

    memset(&info, 0, sizeof(info));
    memset(&attr, 0, sizeof(attr));
    attr.info.bpf_fd = (uint32_t)prog_fd;
    attr.info.info_len = sizeof(info);
    attr.info.info = (uint64_t)(uintptr_t)&info;
    ret = sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr);
    if (ret == 0) {
        *type = info.type;
        *id = info.id;
        memcpy(tag, info.tag, BPF_TAG_SIZE);
    }
    return ret;
}
