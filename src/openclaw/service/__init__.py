"""The Rating API service: HTTP (service.app), Envoy gRPC (service.grpc), metrics, headers.

Nothing is imported here: each entry point pulls in only what it serves with.
"""
