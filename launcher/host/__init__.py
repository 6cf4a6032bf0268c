"""What ships to every host: stdlib-only code run there (host actions, the agent, the demo rank)."""
