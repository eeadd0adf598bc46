"""Pure decisioning logic: catalogue rules, model, arbitration, evaluation, send times."""
