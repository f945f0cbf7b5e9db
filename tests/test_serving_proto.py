"""The committed stubs in serving/gen match proto/xmr/v1/*.proto (regenerate: python -m serving.stubs)."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2

from serving import stubs
from serving.gen import retrieval_pb2, retrieval_pb2_grpc, shard_pb2, shard_pb2_grpc

MODULES = {"xmr/v1/retrieval.proto": (retrieval_pb2, retrieval_pb2_grpc, "Retrieval",
                                      ["Retrieve", "BatchRetrieve", "Complete", "ListModels", "ReloadModel"]),
           "xmr/v1/shard.proto": (shard_pb2, shard_pb2_grpc, "Shard", ["Expand", "Describe"])}


def fresh_descriptors(tmp_path) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    from grpc_tools import protoc

    out = tmp_path / "set.pb"
    assert protoc.main(["protoc", f"-I{stubs.PROTO_ROOT}", f"--descriptor_set_out={out}",
                        *(str(stubs.PROTO_ROOT / f) for f in stubs.PROTO_FILES)]) == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    for f in files:
        for message in f.message_type:  # protoc adds json_name to descriptor sets, not to generated code
            for m in [message, *message.nested_type]:
                for field in m.field:
                    field.ClearField("json_name")
    return {f.name: f for f in files}


@pytest.mark.parametrize("proto", sorted(MODULES))
def test_committed_stubs_match_the_proto(tmp_path, proto):
    pb, pb_grpc, service_name, methods = MODULES[proto]
    fresh = fresh_descriptors(tmp_path)[proto]
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert committed == fresh, "serving/gen is stale: run python -m serving.stubs"
    assert [s.name for s in fresh.service] == [service_name]
    assert [m.name for m in fresh.service[0].method] == methods
    servicer = getattr(pb_grpc, f"{service_name}Servicer")
    assert all(callable(getattr(servicer, name)) for name in methods)
    # the generated service module imports the committed messages, not protoc's xmr.v1 path
    stem = proto.rsplit("/", 1)[1].replace(".proto", "_pb2")
    assert getattr(pb_grpc, f"xmr_dot_v1_dot_{stem.replace('_pb2', '__pb2')}") is pb


def test_generate_rewrites_the_imports(tmp_path):
    files = {p.name: p for p in stubs.generate(tmp_path)}
    assert set(files) == {f"{s}_pb2{e}" for s in ("retrieval", "shard") for e in (".py", ".pyi", "_grpc.py")}
    for stem in ("retrieval", "shard"):
        text = files[f"{stem}_pb2_grpc.py"].read_text()
        assert f"from serving.gen import {stem}_pb2 as" in text and "from xmr.v1" not in text
