"""gRPC edge of content: maps protos to the domain and back."""
