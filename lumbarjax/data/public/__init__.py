"""Readers for public lumbar-spine datasets as downloaded (each layout in its reader module's
docstring; what the readers return in docs/CONTRACTS.md, ``data.public``)."""
