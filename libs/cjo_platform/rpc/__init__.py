"""gRPC plumbing shared by every service: server bootstrap, interceptors, clients, statuses."""
