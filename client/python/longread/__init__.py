"""Python client for the longread gRPC service (generated stubs in ``longread.v1``)."""
