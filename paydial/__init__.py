"""The `paydial` command: serve, worker, admin and the terminal phone.

Errors: CommandError (command.py), a message for the operator (stderr, exit status 1).
"""
