"""Paydial's process-level pieces (settings, command line), beside api/, ivr/ and gateways/."""
