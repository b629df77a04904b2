#!/bin/bash
# A pod as the kernel sees one: a process in a mount namespace of its own
# whose root holds the system's programs, the agent's socket and the shim,
# and nothing of the agent's data dir. Run inside `unshare --mount
# --propagation private`: makes that root (a tmpfs at ROOT) and runs WORKLOAD
# under the shim in it (chroot), with DATA_DIR (which it must not see) as $1.
# Usage: pod_namespace.sh ROOT SOCKET SHIM DATA_DIR WORKLOAD
set -euo pipefail
root=$1 socket=$2 shim=$3 data=$4 workload=$5
mount -t tmpfs pod "$root"
mkdir -p "$root"/{usr,proc,dev,tmp,run/onebox}
mount --rbind /usr "$root/usr"
mount -o remount,bind,ro "$root/usr"
for d in bin sbin lib lib64; do  # merged /usr (Debian 12): symlinks into usr
  if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$root/$d"
  elif [ -d "/$d" ]; then mkdir "$root/$d" && mount --rbind "/$d" "$root/$d"; fi
done
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
# Only the socket and the library, each bound alone and read-only, where
# deploy/kubernetes/workload-example.yaml has them.
touch "$root/run/onebox/agent.sock" "$root/run/onebox/libonebox.so"
mount --bind "$socket" "$root/run/onebox/agent.sock"
mount --bind "$shim" "$root/run/onebox/libonebox.so"
mount -o remount,bind,ro "$root/run/onebox/agent.sock"
mount -o remount,bind,ro "$root/run/onebox/libonebox.so"
cp "$workload" "$root/workload.sh"
exec chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp \
  LD_PRELOAD=/run/onebox/libonebox.so ONEBOX_SOCKET=/run/onebox/agent.sock /bin/bash /workload.sh "$data"
