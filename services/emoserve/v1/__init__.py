"""Generated protobuf/gRPC stubs of the emoserve.v1 API (tools/gen_protos.py)."""
