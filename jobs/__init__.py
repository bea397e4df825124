"""The tryall jobs: `tryall <job>`, or `python -m jobs.<job>` (what `ray job submit` runs); listed in jobs.registry."""
