"""The ``landscape`` command-line interface (click)."""
