"""Readers for public lumbar-spine datasets as downloaded (layouts in DESIGN.md section 7)."""
