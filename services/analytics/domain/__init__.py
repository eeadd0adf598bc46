"""Facts and reports, free of transport and persistence."""
