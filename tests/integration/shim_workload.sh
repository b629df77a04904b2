#!/usr/bin/env bash
# A workload of ordinary programs, run once in a native directory and once,
# under the shim, in /cluster: tests/integration/shim_test.cc compares the two
# outputs (with the directory's name replaced by $D). Usage: shim_workload.sh DIR
set -u
D=$1
cd "$D" || exit 1
export LC_ALL=C TZ=UTC
step() { echo "== $*"; }

step mkdir and redirections
mkdir -p a/b/c && echo hello > a/b/f && echo more >> a/b/f && cat a/b/f
printf 'x\ny\n' | tee a/t > /dev/null; wc -l < a/t
step ls and stat
ls -1 a a/b; ls -la a/b | awk '{print $1, $5, $9}'
stat -c '%n %s %F %a' a a/b a/b/f
step cp mv ln rm
cp -a a/b a/b2 && mv a/b2/f a/b2/g && ln -s g a/b2/l && ln a/b2/g a/b2/hard
readlink a/b2/l; cat a/b2/l; stat -c '%h' a/b2/g
find . | sort
rm a/b2/hard && rm -r a/b2 && find . | sort
step touch chmod du
touch -d '2020-01-02 03:04:05' a/b/f && stat -c '%y %a' a/b/f
chmod 600 a/b/f && stat -c '%a' a/b/f && chmod u+x a/b/f && test -x a/b/f && echo executable
du -a --apparent-size a | sort -k2
step sed sort
printf 'c\nb\na\n' > s && sort -o s s && cat s && sed -i 's/b/B/' s && cat s
step tar
tar -cf t.tar a s && mkdir x && tar -xf t.tar -C x && find x | sort && cmp a/b/f x/a/b/f && echo same
step pipes and subshells
(cd a && pwd | sed "s|^$D|\$D|") ; cat s | tr a-z A-Z | sort -r
step python
python3 - <<'PY'
import os, shutil
with open("p.txt", "w") as f: f.write("py\n")
os.makedirs("pd/q", exist_ok=True)
shutil.copytree("a", "pd/copy")
os.replace("p.txt", "pd/p.txt")
for root, dirs, files in sorted(os.walk("pd")):
    print(root, sorted(dirs), sorted(files))
print(open("pd/p.txt").read().strip(), os.path.getsize("pd/copy/b/f"))
print(os.getcwd().replace(os.environ.get("D", "?"), "$D"))
PY
step sed in place by absolute path, temp files
sed -i 's/A/aa/' "$D/s" && cat "$D/s"
t=$(mktemp "$D/tmp.XXXXXX") && echo temp > "$t" && cat "$t" && rm "$t"
step git
git init -q repo && cd repo && echo one > f && git add f &&
  git -c user.email=t@example.org -c user.name=t commit -qm first && echo two >> f &&
  git -c user.email=t@example.org -c user.name=t commit -qam second && git log --format=%s && git status --short &&
  git show HEAD:f && cd ..
step gcc and programs stored here
printf '#include <stdio.h>\nint main(void) { puts("built here"); return 0; }\n' > m.c
gcc -o m m.c && ./m && "$D/m" && PATH="$D:$PATH" m
printf '#!/bin/sh\necho script with $# args\n' > s.sh && chmod +x s.sh && ./s.sh a b && "$D/s.sh" c
step cleanup
rm -rf a s t.tar x pd repo m m.c s.sh && ls -A
