"""cjo orchestration: journeys and the engine that walks each enrolled profile through them."""
