#!/bin/sh
# probe: prints what the container sees as "key: value" lines, for the tests to compare.
echo "fds:" $(ls /proc/self/fd)
echo "uid: $(id -u)"
echo "gid: $(id -g)"
echo "groups: $(id -G)"
grep -E '^(Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\t' | sed 's/:/: /; s/ *$//'
echo "hostname: $(hostname)"
echo "domainname: $(cat /proc/sys/kernel/domainname)"
echo "cwd: $(pwd)"
echo "umask: $(umask)"
echo "pid: $$"
echo "oom_score_adj: $(cat /proc/self/oom_score_adj)"
env | sort | sed 's/^/env: /'
sed -n 's/^Max //p' /proc/self/limits | tr -s ' ' | sed 's/ *$//; s/^/limit: /'
# mount point, per-mount options, fs type, source, super options
awk '{ for (i = 7; $i != "-"; i++); print "mount: " $5 " " $6 " " $(i+1) " " $(i+2) " " $(i+3) }' /proc/self/mountinfo
for f in /dev/* /dev/pts/*; do
    if [ -L "$f" ]; then echo "dev: $f -> $(readlink "$f")"; else echo "dev: $(stat -c '%n %F %t,%T %a %u:%g' "$f")"; fi
done
echo "lo: $(cat /sys/class/net/lo/flags 2>/dev/null)"
if touch /.probe-rw 2>/dev/null; then rm -f /.probe-rw; echo "root: rw"; else echo "root: ro"; fi
