"""The committed stubs in serving/gen match proto/xmr/v1/retrieval.proto (regenerate: python -m serving.stubs)."""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from serving import stubs
from serving.gen import retrieval_pb2 as pb
from serving.gen import retrieval_pb2_grpc as pb_grpc


def fresh_descriptor(tmp_path) -> descriptor_pb2.FileDescriptorProto:
    from grpc_tools import protoc

    out = tmp_path / "set.pb"
    assert protoc.main(["protoc", f"-I{stubs.PROTO_ROOT}", f"--descriptor_set_out={out}",
                        str(stubs.PROTO_ROOT / stubs.PROTO_FILE)]) == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    assert [f.name for f in files] == [stubs.PROTO_FILE]
    for message in files[0].message_type:  # protoc adds json_name to descriptor sets, not to generated code
        for m in [message, *message.nested_type]:
            for field in m.field:
                field.ClearField("json_name")
    return files[0]


def test_committed_messages_match_the_proto(tmp_path):
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert committed == fresh_descriptor(tmp_path), "serving/gen is stale: run python -m serving.stubs"


def test_committed_service_stubs_match_the_proto(tmp_path):
    service = fresh_descriptor(tmp_path).service
    assert [s.name for s in service] == ["Retrieval"]
    methods = [m.name for m in service[0].method]
    assert methods == ["Retrieve", "BatchRetrieve", "Complete", "ListModels", "ReloadModel"]
    for name in methods:
        assert callable(getattr(pb_grpc.RetrievalServicer, name))
    # the generated service module imports the committed messages, not protoc's xmr.v1 path
    assert pb_grpc.xmr_dot_v1_dot_retrieval__pb2 is pb


def test_generate_rewrites_the_import(tmp_path):
    files = {p.name: p for p in stubs.generate(tmp_path)}
    assert set(files) == {"retrieval_pb2.py", "retrieval_pb2.pyi", "retrieval_pb2_grpc.py"}
    text = files["retrieval_pb2_grpc.py"].read_text()
    assert "from serving.gen import retrieval_pb2 as" in text and "from xmr.v1" not in text
