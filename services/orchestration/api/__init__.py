"""The gRPC face of orchestration: protos in, domain calls, protos out."""
