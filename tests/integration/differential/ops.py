#!/usr/bin/env python3
# The differential conformance test's program (tests/integration/
# view_convergence_test.cc, ASeededSequence...): a sequence of file operations made from a seed, the
# same whoever runs it, applied in slices under ROOT. It prints one line per
# operation it applies: its number, what it did and the errno it got ("ok"),
# so that a run on a plain directory and a run in /cluster can be compared
# line by line. Which names exist is tracked by a model the generator keeps
# itself (replayed from the first operation), never by looking at ROOT, so
# both runs make exactly the same calls.
#
#   ops.py ROOT SEED FIRST LAST     applies operations FIRST..LAST-1
#   ops.py --snapshot ROOT [--no-mtime]
#                                   prints the tree: one line per entry, a
#                                   file's link count and other names included
#                                   (without files' mtimes: a run elsewhere
#                                   made them at other instants)
import errno
import hashlib
import os
import random
import sys

NAMES = ["a", "b", "c", "d", "e"]
FIXED_TIMES = [1_000_000_000_123_456_789, 1_600_000_000_000_000_001, 1_700_000_000_999_999_999]


class Model:
    """What the operations made so far: directories and other entries, by relative path."""

    def __init__(self):
        self.dirs = {""}
        self.files = set()
        self.links = set()

    def children(self, d):
        pre = d + "/" if d else ""
        return [p for p in self.dirs | self.files | self.links if p != d and p.startswith(pre) and "/" not in p[len(pre):]]

    def exists(self, p):
        return p in self.dirs or p in self.files or p in self.links

    def remove_tree(self, p):
        for s in (self.dirs, self.files, self.links):
            for q in [q for q in s if q == p or q.startswith(p + "/")]:
                s.discard(q)

    def move(self, src, dst):
        for s in (self.dirs, self.files, self.links):
            moved = [q for q in s if q == src or q.startswith(src + "/")]
            for q in moved:
                s.discard(q)
                s.add(dst + q[len(src):])


def generate(seed, count):
    """The operations, each (kind, args), and the model after each."""
    rng = random.Random(seed)
    m = Model()
    ops = []
    for _ in range(count):
        d = rng.choice(sorted(m.dirs))
        name = (d + "/" if d else "") + rng.choice(NAMES)
        existing = sorted(m.files | m.links | (m.dirs - {""}))
        files = sorted(m.files)
        kind = rng.choices(
            ["create", "write", "truncate", "rename", "symlink", "chmod", "utime", "setxattr", "removexattr",
             "mkdir", "rmdir", "unlink", "link"],
            weights=[14, 12, 6, 8, 4, 6, 5, 6, 3, 8, 5, 6, 4])[0]
        if kind in ("write", "truncate", "chmod", "utime") and files:
            name = rng.choice(files)
        if kind in ("setxattr", "removexattr") and (files or len(m.dirs) > 1):
            name = rng.choice(files + sorted(m.dirs - {""}))  # files' and directories' attributes
        if kind in ("rename", "rmdir", "unlink") and existing:
            name = rng.choice(existing)
        if kind == "create":
            ops.append((kind, name, rng.randbytes(rng.randrange(0, 9000))))
            if not m.exists(name) and os.path.dirname(name) in m.dirs:
                m.files.add(name)
        elif kind == "write":
            ops.append((kind, name, rng.randrange(0, 12000), rng.randbytes(rng.randrange(1, 5000))))
        elif kind == "truncate":
            ops.append((kind, name, rng.randrange(0, 12000)))
        elif kind == "rename":
            dst_dir = rng.choice(sorted(m.dirs))
            dst = (dst_dir + "/" if dst_dir else "") + rng.choice(NAMES)
            ops.append((kind, name, dst))
            ok = m.exists(name) and dst != name and not (dst + "/").startswith(name + "/")
            if ok and name in m.dirs:
                ok = not m.exists(dst) or (dst in m.dirs and not m.children(dst))
            elif ok:
                ok = dst not in m.dirs
            if ok:
                m.remove_tree(dst)
                m.move(name, dst)
        elif kind == "link" and files:  # another name of a file (the model knows names, not files)
            src = rng.choice(files)
            ops.append((kind, src, name))
            if not m.exists(name) and os.path.dirname(name) in m.dirs:
                m.files.add(name)
        elif kind == "symlink":
            target = rng.choice(["a", "../b", "c/d", "missing"])
            if target == "../b" and "/" not in name:
                target = "b"  # ("../b" at the top would lead out of ROOT: elsewhere natively and in the cluster)
            ops.append((kind, name, target))
            if not m.exists(name) and os.path.dirname(name) in m.dirs:
                m.links.add(name)
        elif kind == "chmod":  # (not set-user-ID: a peer's root-setid record is refused, by design)
            ops.append((kind, name, rng.choice([0o600, 0o644, 0o640, 0o755, 0o400, 0o1755])))
        elif kind == "utime":
            ops.append((kind, name, rng.choice(FIXED_TIMES)))
        elif kind == "setxattr":
            ops.append((kind, name, "user." + rng.choice(["x", "y", "z"]), rng.randbytes(rng.randrange(0, 40))))
        elif kind == "removexattr":
            ops.append((kind, name, "user." + rng.choice(["x", "y", "z"])))
        elif kind == "mkdir":
            ops.append((kind, name))
            if not m.exists(name) and os.path.dirname(name) in m.dirs:
                m.dirs.add(name)
        elif kind == "rmdir":
            ops.append((kind, name))
            if name in m.dirs and not m.children(name):
                m.dirs.discard(name)
        elif kind == "unlink":
            ops.append((kind, name))
            if name in m.files or name in m.links:
                m.files.discard(name)
                m.links.discard(name)
    return ops


def apply(root, op):
    kind, name = op[0], os.path.join(root, op[1])
    if kind == "create":
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, op[2])
        os.close(fd)
    elif kind == "write":
        fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW)
        os.pwrite(fd, op[3], op[2])
        os.close(fd)
    elif kind == "truncate":
        fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW)
        os.ftruncate(fd, op[2])
        os.close(fd)
    elif kind == "rename":
        os.rename(name, os.path.join(root, op[2]))
    elif kind == "link":
        os.link(name, os.path.join(root, op[2]), follow_symlinks=False)
    elif kind == "symlink":
        os.symlink(op[2], name)
    elif kind == "chmod":
        os.chmod(name, op[2], follow_symlinks=False) if not os.path.islink(name) else None
    elif kind == "utime":
        os.utime(name, ns=(op[2], op[2]), follow_symlinks=False)
    elif kind == "setxattr":
        os.setxattr(name, op[2], op[3], follow_symlinks=False)
    elif kind == "removexattr":
        os.removexattr(name, op[2], follow_symlinks=False)
    elif kind == "mkdir":
        os.mkdir(name, 0o755)
    elif kind == "rmdir":
        os.rmdir(name)
    elif kind == "unlink":
        os.unlink(name)


def snapshot(root, mtimes=True):
    """Every entry below root: path, type, mode, size, mtime (a file's), content or target, xattrs; a file's
    link count, and for a file of several names, the first of its names (by path) found here."""
    first_name = {}
    for d, dirs, files in os.walk(root):
        for n in sorted(files):
            p = os.path.join(d, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if not os.path.islink(p) and st.st_nlink > 1 and (st.st_ino not in first_name or rel < first_name[st.st_ino]):
                first_name[st.st_ino] = rel
    lines = []
    for d, dirs, files in os.walk(root):
        for n in sorted(dirs + files):
            p = os.path.join(d, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            x = ""
            if not os.path.islink(p):
                x = ",".join(f"{a}={os.getxattr(p, a).hex()}" for a in sorted(os.listxattr(p)))
            if os.path.islink(p):
                lines.append(f"{rel} link {os.readlink(p)}")
            elif os.path.isdir(p):
                lines.append(f"{rel} dir {oct(st.st_mode & 0o7777)} [{x}]")
            else:
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()[:16]
                mtime = st.st_mtime_ns if mtimes else "-"
                same = f" ={first_name[st.st_ino]}" if st.st_ino in first_name else ""
                lines.append(f"{rel} file {oct(st.st_mode & 0o7777)} {st.st_size} {mtime} {digest} [{x}] {st.st_nlink}{same}")
    return "\n".join(sorted(lines))


def main():
    if sys.argv[1] == "--snapshot":
        print(snapshot(sys.argv[2], mtimes="--no-mtime" not in sys.argv))
        return
    root, seed, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    for i, op in enumerate(generate(seed, last)):
        if i < first:
            continue
        try:
            apply(root, op)
            result = "ok"
        except OSError as e:
            result = errno.errorcode.get(e.errno, str(e.errno))
        print(i, op[0], op[1], result)


if __name__ == "__main__":
    main()
