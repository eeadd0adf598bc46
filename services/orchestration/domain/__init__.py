"""Journeys, their validation and the enrollment state machine, free of transport and
persistence."""
