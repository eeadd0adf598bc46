"""Content items, Liquid templates and plain-text derivation, free of transport and persistence."""
