#!/usr/bin/env python3
"""deploy/kubernetes against what the agent and the shim need (no cluster
runs here: this reads the manifests as the kubelet would take them).

- The agent's arguments and the probes' are flags `onebox` accepts, and
  every path they name lies in a volume the container mounts.
- The agent holds the systemd unit's capabilities plus SYS_ADMIN (the
  detached view for pods), on the node's PID namespace.
- The init container puts the image's libonebox.so in the run volume, and
  the workload example preloads it and dials the socket through a read-only
  mount of that same host directory.

Usage: deploy_manifests_test.py ONEBOX_BINARY SOURCE_DIR"""
import os
import re
import subprocess
import sys

import yaml

onebox, source = sys.argv[1], sys.argv[2]
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def flags_of(help_args):
    out = subprocess.run([onebox, *help_args, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]*", out))


def mount_holding(container, volumes, path):
    """The (volumeMount, volume) whose mountPath holds path, or (None, None)."""
    for m in container.get("volumeMounts", []):
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/"):
            return m, volumes[m["name"]]
    return None, None


def options(args):
    return dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)


def load(name):
    with open(os.path.join(source, "deploy/kubernetes", name)) as f:
        return list(yaml.safe_load_all(f))


daemonset = next(d for d in load("daemonset.yaml") if d["kind"] == "DaemonSet")
pod = daemonset["spec"]["template"]["spec"]
volumes = {v["name"]: v for v in pod["volumes"]}
agent = next(c for c in pod["containers"] if c["name"] == "agent")

# The agent's arguments and where their paths lie.
args = agent["args"]
check(args[0] == "agent", f"the container runs `onebox {args[0]}`, not `onebox agent`")
agent_flags = flags_of(["agent"])
for a in args[1:]:
    check(a.split("=", 1)[0] in agent_flags, f"onebox agent takes no {a.split('=', 1)[0]}")
opts = options(args)
for key in ("data-dir", "socket", "cacert", "cert", "key"):
    m, v = mount_holding(agent, volumes, opts.get(key, "?"))
    check(m is not None, f"--{key}={opts.get(key)} lies in no volume the agent mounts")
    if key in ("data-dir", "socket"):
        check(v is not None and "hostPath" in v, f"--{key} must outlive the pod (a hostPath volume)")
# The address the other agents dial: the node's own, and its port open for gRPC and heartbeats.
listen_host, listen_port = opts.get("listen", "?:0").rsplit(":", 1)
env = {e["name"]: e for e in agent.get("env", [])}
var = re.fullmatch(r"\$\((\w+)\)", listen_host)
check(listen_host not in ("0.0.0.0", "[::]", "::"), f"--listen={opts.get('listen')}: other agents cannot dial it")
check(var is None or "fieldRef" in env.get(var.group(1), {}).get("valueFrom", {}),
      f"--listen={opts.get('listen')} names no variable set from the pod's fields")
ports = {(p.get("hostPort"), p.get("protocol", "TCP")) for p in agent.get("ports", [])}
for proto in ("TCP", "UDP"):
    check((int(listen_port), proto) in ports, f"the node does not open {listen_port}/{proto} (gRPC, heartbeats)")
tls = volumes[mount_holding(agent, volumes, opts["cacert"])[0]["name"]]
for key in ("cacert", "cert", "key"):
    check(os.path.dirname(opts[key]) == mount_holding(agent, volumes, opts[key])[0]["mountPath"],
          f"--{key} is not at the top of its volume")
check("secret" in tls, "the TLS files come from no Secret")

# The probes: the CLI over the socket the agent serves.
cli_flags = flags_of([])
for probe in ("readinessProbe", "livenessProbe"):
    cmd = agent[probe]["exec"]["command"]
    check(cmd[0] == "onebox" and cmd[-1] == "status", f"{probe} runs {cmd}, not `onebox ... status`")
    for a in cmd[1:-1]:
        check(a.split("=", 1)[0] in cli_flags, f"{probe}: onebox takes no {a}")
    check(options(cmd[1:-1]).get("socket") == opts["socket"], f"{probe} asks another socket than the agent's")

# Privileges: the unit's capabilities, SYS_ADMIN, the node's PIDs.
with open(os.path.join(source, "deploy/systemd/onebox-agent.service")) as f:
    unit_caps = next(line.split("=", 1)[1].split() for line in f if line.startswith("CapabilityBoundingSet="))
caps = agent["securityContext"]["capabilities"]
check(caps.get("drop") == ["ALL"], "the agent keeps capabilities it does not need (drop: [ALL])")
check(sorted(caps["add"]) == sorted([c[len("CAP_"):] for c in unit_caps] + ["SYS_ADMIN"]),
      f"capabilities {sorted(caps['add'])} are not the unit's plus SYS_ADMIN")
check(agent["securityContext"].get("allowPrivilegeEscalation") is False, "no NoNewPrivileges")
check(pod.get("hostPID") is True, "the agent does not see the node's PIDs (hostPID)")

# The shim, beside the socket, from the image.
run_mount, run_volume = mount_holding(agent, volumes, opts["socket"])
shim_host = os.path.join(run_volume["hostPath"]["path"], "libonebox.so")
init = next(c for c in pod["initContainers"] if c["name"] == "shim")
copy = " ".join(init["command"])
with open(os.path.join(source, "deploy/Dockerfile")) as f:
    image_shim = re.search(r"COPY .*libonebox\.so (\S+)", f.read()).group(1)
check(f"cp {image_shim} " in copy, f"the init container does not copy the image's {image_shim}")
init_mount, init_volume = mount_holding(init, volumes, os.path.join(run_mount["mountPath"], "libonebox.so"))
check(init_volume is run_volume and f"{run_mount['mountPath']}/libonebox.so" in copy,
      "the init container does not put libonebox.so in the agent's run volume")

# The workload example: the shim and the socket through that host directory, read-only.
deployment = next(d for d in load("workload-example.yaml") if d["kind"] == "Deployment")
wpod = deployment["spec"]["template"]["spec"]
wvolumes = {v["name"]: v for v in wpod["volumes"]}
for c in wpod["containers"]:
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    for var, host_file in (("LD_PRELOAD", shim_host),
                           ("ONEBOX_SOCKET", os.path.join(run_volume["hostPath"]["path"], os.path.basename(opts["socket"])))):
        m, v = mount_holding(c, wvolumes, env.get(var, "?"))
        check(m is not None and "hostPath" in v, f"{c['name']}: {var}={env.get(var)} lies in no hostPath volume")
        if m is not None and "hostPath" in v:
            seen = os.path.join(v["hostPath"]["path"], os.path.relpath(env[var], m["mountPath"]))
            check(seen == host_file, f"{c['name']}: {var} is the node's {seen}, not {host_file}")
            check(m.get("readOnly") is True, f"{c['name']}: {m['mountPath']} is writable by the pod")
    check(len(c.get("volumeMounts", [])) == 1, f"{c['name']} mounts more than the agent's run directory")
    non_root = c.get("securityContext", {}).get("runAsNonRoot", wpod.get("securityContext", {}).get("runAsNonRoot"))
    check(non_root is True, f"{c['name']} may run as the node's root (root in /cluster on the node)")

for f in failures:
    print("FAIL:", f)
print(f"deploy manifests: {len(failures)} problem(s)")
sys.exit(1 if failures else 0)
