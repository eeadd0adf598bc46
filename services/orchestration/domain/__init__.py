"""Journeys, their validation and the enrollment state machine, free of transport and
persistence. The state machine is pure functions, split by concern:

- ``enrollment`` and ``transitions``: the enrollment record, its steps and facts, and the moves
  every rule builds a transition from;
- ``entry``: triggers, the re-entry rules and a new enrollment;
- ``events`` (a batch of events), ``reactions`` (goals, exit criteria, event waits) and
  ``lifecycle`` (erasures and merges): event application;
- ``walk``, ``orders`` and ``splits``: walking nodes and applying the answers of sends;
- ``timing``: wait durations, local-time waits, profile time zones.

It never talks to a database or a peer: the service layer feeds it what it read (events,
claimed enrollments, answers of content and delivery) and persists the transitions it returns.
"""
