"""gRPC edge of analytics: maps protos to the domain and back."""
