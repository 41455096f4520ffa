"""Paydial: the process-level pieces (settings, command line) that sit beside api/, ivr/ and gateways/."""
