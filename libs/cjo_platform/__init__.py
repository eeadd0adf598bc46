"""The shared platform of every cjo service: configuration, logging, tracing, gRPC server and
clients, errors, database and clock. Services import from here; nothing here imports a service."""
