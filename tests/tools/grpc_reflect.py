#!/usr/bin/python3
"""A grpcurl-compatible reflection client (grpcurl is not packaged in Debian 12).

It knows no .proto of the server: every descriptor comes from the server's
reflection service (grpc.reflection.v1alpha, which Debian's gRPC 1.51 serves),
exactly as grpcurl works.

  grpc_reflect.py [TLS] HOST:PORT list
  grpc_reflect.py [TLS] HOST:PORT describe SYMBOL
  grpc_reflect.py [TLS] HOST:PORT call SERVICE/METHOD [JSON]

TLS, as grpcurl takes it: --cacert FILE (the cluster CA; the server must show
a node certificate of it, checked for the name node.onebox unless
--servername says another), and --cert FILE --key FILE (a client
certificate: an admin's may call the mutating methods).

Needs Debian's python3-grpcio, python3-protobuf and protoc (protobuf-compiler);
run it with /usr/bin/python3 (a python3 from elsewhere lacks those modules).
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

REFLECTION_PROTO_ROOT = "/usr/share/grpc-proto"
REFLECTION_PROTO = "grpc/reflection/v1alpha/reflection.proto"
REFLECTION_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def _load_reflection_messages():
    """Compile the reflection messages (only those: the server's own come over the wire)."""
    # Compiled into a directory that goes once the module is loaded.
    with tempfile.TemporaryDirectory(prefix="onebox-reflect-") as out:
        subprocess.run(["protoc", f"--proto_path={REFLECTION_PROTO_ROOT}", f"--python_out={out}", REFLECTION_PROTO],
                       check=True)
        # Loaded by path: its package name (grpc.reflection...) would clash with grpcio's.
        path = os.path.join(out, REFLECTION_PROTO.replace(".proto", "_pb2.py"))
        spec = importlib.util.spec_from_file_location("onebox_reflection_pb2", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


NODE_ROLE_NAME = "node.onebox"  # every agent's certificate carries it (nodeagent/tls/tls_identity.h)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def make_channel(address, cacert=None, cert=None, key=None, servername=NODE_ROLE_NAME):
    if cacert is None:
        return grpc.insecure_channel(address)
    creds = grpc.ssl_channel_credentials(root_certificates=_read(cacert),
                                         private_key=_read(key) if key else None,
                                         certificate_chain=_read(cert) if cert else None)
    return grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", servername)])


class ReflectionClient:
    def __init__(self, address, timeout=10, **tls):
        self.channel = make_channel(address, **tls)
        self.timeout = timeout
        self.pb = _load_reflection_messages()
        self.pool = descriptor_pool.DescriptorPool()
        self._files = set()
        self._stream = self.channel.stream_stream(
            REFLECTION_METHOD,
            request_serializer=self.pb.ServerReflectionRequest.SerializeToString,
            response_deserializer=self.pb.ServerReflectionResponse.FromString)

    def _ask(self, **kwargs):
        req = self.pb.ServerReflectionRequest(**kwargs)
        for resp in self._stream(iter([req]), timeout=self.timeout):
            if resp.HasField("error_response"):
                raise RuntimeError(f"reflection error {resp.error_response.error_code}: "
                                   f"{resp.error_response.error_message}")
            return resp
        raise RuntimeError("reflection stream closed without an answer")

    def list_services(self):
        resp = self._ask(list_services="")
        return sorted(s.name for s in resp.list_services_response.service)

    def _add_files(self, serialized_files):
        protos = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in serialized_files]
        by_name = {p.name: p for p in protos}

        def add(p):
            if p.name in self._files:
                return
            for dep in p.dependency:
                if dep not in self._files:
                    dep_proto = by_name.get(dep)
                    if dep_proto is None:
                        resp = self._ask(file_by_filename=dep)
                        self._add_files(resp.file_descriptor_response.file_descriptor_proto)
                    else:
                        add(dep_proto)
            self.pool.Add(p)
            self._files.add(p.name)

        for p in protos:
            add(p)

    def resolve(self, symbol):
        """Fetch the file that defines symbol (and its dependencies) into the pool."""
        resp = self._ask(file_containing_symbol=symbol)
        self._add_files(resp.file_descriptor_response.file_descriptor_proto)

    def service(self, name):
        self.resolve(name)
        return self.pool.FindServiceByName(name)

    def describe(self, symbol):
        self.resolve(symbol)
        try:
            svc = self.pool.FindServiceByName(symbol)
        except KeyError:
            msg = self.pool.FindMessageTypeByName(symbol)
            fields = "\n".join(f"  {f.name} = {f.number};" for f in msg.fields)
            return f"{msg.full_name} is a message:\nmessage {msg.name} {{\n{fields}\n}}"
        lines = [f"{svc.full_name} is a service:", f"service {svc.name} {{"]
        for m in svc.methods:
            lines.append(f"  rpc {m.name} ( .{m.input_type.full_name} ) returns ( .{m.output_type.full_name} );")
        lines.append("}")
        return "\n".join(lines)

    def _message_class(self, desc):
        get = getattr(message_factory, "GetMessageClass", None)
        return get(desc) if get else message_factory.MessageFactory(self.pool).GetPrototype(desc)

    def call(self, full_method, request_json="{}"):
        service_name, method_name = full_method.replace("/", ".").rsplit(".", 1)
        svc = self.service(service_name)
        method = svc.FindMethodByName(method_name)
        if method is None:
            raise KeyError(f"{service_name} has no method {method_name}")
        req_cls = self._message_class(method.input_type)
        resp_cls = self._message_class(method.output_type)
        req = json_format.Parse(request_json, req_cls())
        rpc = self.channel.unary_unary(f"/{service_name}/{method_name}",
                                       request_serializer=req_cls.SerializeToString,
                                       response_deserializer=resp_cls.FromString)
        resp = rpc(req, timeout=self.timeout)
        return json.loads(json_format.MessageToJson(resp, preserving_proto_field_name=True))


def main(argv):
    tls = {}
    argv = list(argv)
    for flag in ("--cacert", "--cert", "--key", "--servername"):
        if flag in argv:
            i = argv.index(flag)
            if i + 1 >= len(argv):
                print(f"{flag} needs a value", file=sys.stderr)
                return 2
            tls[flag[2:]] = argv[i + 1]
            del argv[i:i + 2]
    if len(argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    client = ReflectionClient(argv[1], **tls)
    verb = argv[2]
    try:
        if verb == "list":
            print("\n".join(client.list_services()))
        elif verb == "describe" and len(argv) == 4:
            print(client.describe(argv[3]))
        elif verb == "call" and len(argv) in (4, 5):
            print(json.dumps(client.call(argv[3], argv[4] if len(argv) == 5 else "{}"), indent=2))
        else:
            print(__doc__.strip(), file=sys.stderr)
            return 2
    except grpc.RpcError as e:
        print(f"ERROR: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
