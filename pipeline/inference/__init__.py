"""The batch inference job (nightly, backfill, ab, demo): manifests to composited images and records."""
