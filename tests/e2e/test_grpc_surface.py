"""Standard gRPC services on a node: health and server reflection."""

from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.procs import NodeProc


def test_health_reports_each_service(shared_node: NodeProc) -> None:
    stub = health_pb2_grpc.HealthStub(shared_node.channel())
    for service in ("", "taskward.v1.TaskManager", "taskward.v1.TestApi"):
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_services(shared_node: NodeProc) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(shared_node.channel())
    reqs = [reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="taskward.v1.TaskManager")]
    answers = list(stub.ServerReflectionInfo(iter(reqs)))
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"taskward.v1.TaskManager", "taskward.v1.TestApi", "grpc.health.v1.Health"} <= names
    assert answers[1].file_descriptor_response.file_descriptor_proto
