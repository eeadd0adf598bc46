"""The gRPC edge of the decisioning service."""
