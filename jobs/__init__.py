"""Entry points that `ray job submit ... -- python -m jobs.<name>` runs."""
