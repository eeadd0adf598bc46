"""cjo's web console: journeys drawn as graphs with live counts, profiles, messages, experiment
and decision reports, signed in with a workspace's API key. An HTTP process that only calls the
services' public gRPC APIs with the signed-in key; it owns no data."""
