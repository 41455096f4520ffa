"""The `paydial` command: serve, worker, admin and the terminal phone."""
