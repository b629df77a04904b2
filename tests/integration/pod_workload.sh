#!/bin/bash
# What a program in a pod does in /cluster (run by pod_namespace.sh under the
# shim, in a root without the agent's data dir, $1): its output is compared
# with what the test expects, line by line.
set -u
data=$1
[ -e "$data" ] && echo "the agent's data dir shows" || echo "no data dir"
mkdir -p /cluster/pod/sub && echo from-pod > /cluster/pod/a && cat /cluster/pod/a
cat /cluster/pod/from-host
cd /cluster/pod && pwd && /bin/pwd && sh -c 'pwd; cat a'  # a child starts with its cwd in the view
cd sub && pwd && cat ../a && ls ..
printf '#!/bin/sh\necho script ran in "$(pwd)"\n' > /cluster/pod/s.sh && chmod +x /cluster/pod/s.sh && /cluster/pod/s.sh
cp /cluster/pod/a /cluster/pod/b && mv /cluster/pod/b /cluster/pod/sub/c && cat /cluster/pod/sub/c
cd / && find /cluster/pod | sort
# An fd inherited from the shell, in the shell's copy of the view, while
# python gets a copy of its own; and nftw, which walks the view through /proc.
exec 3</cluster/pod/sub
/usr/bin/python3 - <<'PY'
import ctypes, os
os.listdir('/cluster')
os.fchdir(3)
print('fchdir:', os.getcwd())
class FTW(ctypes.Structure):
    _fields_ = [('base', ctypes.c_int), ('level', ctypes.c_int)]
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(FTW))
seen = []
def visit(path, st, flag, ftw):
    seen.append(f'{path.decode()}:{path.decode()[ftw.contents.base:]}:{ftw.contents.level}')
    return 0
FTW_PHYS = 1
print('nftw:', ctypes.CDLL(None).nftw(b'/cluster/pod', CALLBACK(visit), 8, FTW_PHYS), *sorted(seen))
PY
exec 3<&-
/usr/bin/python3 - <<'PY'
import os
# The program holds the shim's descriptor of the view: ".." from it, as the
# kernel resolves it, stays at the view's top (a detached mount).
os.listdir('/cluster/pod')
tops = 0
for n in sorted(os.listdir('/proc/self/fd'), key=int):
    link = f'/proc/self/fd/{n}'
    try:
        if os.readlink(link) != '/' or os.stat(link).st_ino == os.stat('/').st_ino:
            continue
        view = sorted(os.listdir(link))
        up = sorted(os.listdir(link + '/../../..'))
    except OSError:
        continue
    tops += 1
    print('view fd:', 'cluster' in view, 'up is the view' if up == view else f'up leads out: {up}')
print('view fds:', tops)
PY
