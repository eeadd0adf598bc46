"""Background loops: learning from lapsed windows, forwarders."""
