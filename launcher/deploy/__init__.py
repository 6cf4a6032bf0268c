"""The operator-side shell: SSH transport, host calls, and the orchestration of up/down/restart."""
