"""The decisioning service: next best action, bandits and off-policy evaluation."""
