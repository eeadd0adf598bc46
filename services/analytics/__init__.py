"""cjo analytics: records facts from orchestration and delivery and builds reports from them."""
