"""The product's core: payment sessions and the phone call."""
