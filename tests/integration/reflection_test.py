#!/usr/bin/python3
"""grpcurl compatibility: a real agent, queried through server reflection only.

The client (tests/tools/grpc_reflect.py) is handed no .proto of onebox: it
lists services, describes them and calls them from descriptors the agent
sends, which is what grpcurl does.

usage: reflection_test.py PATH/TO/onebox
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import grpc  # noqa: E402
import grpc_reflect  # noqa: E402

ONEBOX = None


def start_agent(cls, extra_args=()):
    """Starts an agent for a test class (cls.dir, cls.sock, cls.log, cls.agent, cls.address)."""
    cls.dir = tempfile.mkdtemp(prefix="onebox-reflection-")
    cls.sock = sock = os.path.join(cls.dir, "agent.sock")
    cls.log = open(os.path.join(cls.dir, "agent.log"), "w+")
    cls.agent = subprocess.Popen([ONEBOX, "agent", "--name", "refl", "--data-dir", os.path.join(cls.dir, "data"),
                                  "--listen", "127.0.0.1:0", "--socket", sock, *extra_args], stderr=cls.log,
                                 stdout=cls.log)
    deadline = time.time() + 20
    while True:  # the shim socket tells the agent's gRPC address (a Ping, as the CLI's --socket does)
        st = subprocess.run([ONEBOX, "--socket", sock, "-o", "json", "nodes", *cls.cli_tls],
                            capture_output=True, text=True)
        if st.returncode == 0:
            cls.address = json.loads(st.stdout)["nodes"][0]["address"]
            return
        if cls.agent.poll() is not None or time.time() > deadline:
            cls.log.seek(0)
            raise RuntimeError(f"agent did not start: {cls.log.read()} {st.stderr}")
        time.sleep(0.05)


def stop_agent(cls):
    cls.agent.send_signal(signal.SIGTERM)
    code = cls.agent.wait(timeout=15)
    cls.log.close()
    shutil.rmtree(cls.dir, ignore_errors=True)
    assert code == 0, f"agent exited with {code} after SIGTERM"


class ReflectionTest(unittest.TestCase):
    cli_tls = []

    @classmethod
    def setUpClass(cls):
        start_agent(cls)
        cls.client = grpc_reflect.ReflectionClient(cls.address)

    @classmethod
    def tearDownClass(cls):
        stop_agent(cls)

    def test_lists_services(self):
        services = self.client.list_services()
        for name in ("onebox.v1.Cluster", "onebox.v1.Store", "grpc.health.v1.Health"):
            self.assertIn(name, services)

    def test_describes_cluster_service(self):
        text = self.client.describe("onebox.v1.Cluster")
        self.assertIn("rpc ListNodes ( .onebox.v1.ListNodesRequest ) returns ( .onebox.v1.ListNodesResponse );", text)
        self.assertIn("rpc Status ( .onebox.v1.StatusRequest ) returns ( .onebox.v1.StatusResponse );", text)

    def test_describes_health_service(self):
        self.assertIn("rpc Check ( .grpc.health.v1.HealthCheckRequest )", self.client.describe("grpc.health.v1.Health"))

    def test_calls_list_nodes(self):
        nodes = self.client.call("onebox.v1.Cluster/ListNodes")["nodes"]
        self.assertEqual(len(nodes), 1)
        self.assertEqual(nodes[0]["name"], "refl")
        self.assertEqual(nodes[0]["state"], "NODE_STATE_ALIVE")
        self.assertEqual(nodes[0]["address"], self.address)

    def test_health_check_serving(self):
        self.assertEqual(self.client.call("grpc.health.v1.Health/Check", "{}")["status"], "SERVING")
        self.assertEqual(self.client.call("grpc.health.v1.Health/Check", '{"service": "onebox.v1.Store"}')["status"],
                         "SERVING")

    def test_store_round_trip_and_error(self):
        # Writes act as their caller: over gRPC (anonymous) they are refused, with where to go instead.
        with self.assertRaises(grpc.RpcError) as err:
            self.client.call("onebox.v1.Store/Put", '{"key": "reflected", "value": "aGk="}')
        self.assertEqual(err.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("Unix socket", err.exception.details())
        put = subprocess.run([ONEBOX, "--socket", self.sock, "kv", "put", "reflected", "hi"], capture_output=True, text=True)
        self.assertEqual(put.returncode, 0, put.stderr)
        got = self.client.call("onebox.v1.Store/Get", '{"key": "reflected"}')
        self.assertTrue(got["found"])
        self.assertEqual(got["value"], "aGk=")
        with self.assertRaises(grpc.RpcError) as err:
            self.client.call("onebox.v1.Store/Get", '{"key": ""}')
        self.assertEqual(err.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("key must not be empty", err.exception.details())


class TlsReflectionTest(unittest.TestCase):
    """An agent with mutual TLS (onebox ca init, cert issue): reflection, health and reads are open to a client
    that trusts the cluster CA; writes need an admin certificate; a client of another CA is not let in."""

    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="onebox-reflection-pki-")
        p = lambda name: os.path.join(cls.pki, name)  # noqa: E731
        for argv in (["ca", "init", p("ca")], ["ca", "init", p("other-ca")],
                     ["cert", "issue", "--ca", p("ca"), "--out", cls.pki, "refl"],
                     ["cert", "issue", "--ca", p("ca"), "--out", cls.pki, "--admin", "ops"],
                     ["cert", "issue", "--ca", p("other-ca"), "--out", cls.pki, "--admin", "intruder"]):
            subprocess.run([ONEBOX, *argv], check=True, capture_output=True)
        cls.cacert = p("ca/ca.pem")
        cls.cli_tls = ["--cacert", cls.cacert]
        start_agent(cls, ["--cacert", cls.cacert, "--cert", p("refl.pem"), "--key", p("refl.key")])
        cls.client = grpc_reflect.ReflectionClient(cls.address, cacert=cls.cacert)
        cls.admin = grpc_reflect.ReflectionClient(cls.address, cacert=cls.cacert, cert=p("ops.pem"), key=p("ops.key"))
        cls.intruder = grpc_reflect.ReflectionClient(cls.address, timeout=3, cacert=cls.cacert,
                                                     cert=p("intruder.pem"), key=p("intruder.key"))

    @classmethod
    def tearDownClass(cls):
        stop_agent(cls)
        shutil.rmtree(cls.pki, ignore_errors=True)

    def test_lists_describes_and_checks_health_over_tls(self):
        self.assertIn("onebox.v1.Store", self.client.list_services())
        self.assertIn("rpc Put ( .onebox.v1.PutRequest )", self.client.describe("onebox.v1.Store"))
        self.assertEqual(self.client.call("grpc.health.v1.Health/Check", "{}")["status"], "SERVING")

    def test_a_write_needs_an_admin_certificate(self):
        with self.assertRaises(grpc.RpcError) as err:
            self.client.call("onebox.v1.Store/Put", '{"key": "tls", "value": "aGk="}')
        self.assertEqual(err.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("admin certificate", err.exception.details())
        self.admin.call("onebox.v1.Store/Put", '{"key": "tls", "value": "aGk="}')
        self.assertEqual(self.client.call("onebox.v1.Store/Get", '{"key": "tls"}')["value"], "aGk=")

    def test_a_client_of_another_ca_and_a_plaintext_one_are_not_let_in(self):
        with self.assertRaises(grpc.RpcError) as err:
            self.intruder.call("onebox.v1.Cluster/ListNodes")
        self.assertEqual(err.exception.code(), grpc.StatusCode.UNAVAILABLE)
        plain = grpc_reflect.ReflectionClient(self.address, timeout=3)
        with self.assertRaises(grpc.RpcError) as err:
            plain.call("onebox.v1.Cluster/ListNodes")
        self.assertEqual(err.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_the_command_line_client_takes_the_same_flags(self):
        tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "grpc_reflect.py")
        got = subprocess.run(["/usr/bin/python3", tool, "--cacert", self.cacert, self.address, "call",
                              "onebox.v1.Cluster/ListNodes"], capture_output=True, text=True)
        self.assertEqual(got.returncode, 0, got.stderr)
        self.assertEqual(json.loads(got.stdout)["nodes"][0]["name"], "refl")


if __name__ == "__main__":
    ONEBOX = sys.argv.pop(1)
    unittest.main(verbosity=2)
