"""The embedded runtime: ``meridian up`` starts every service as its own process, as Cloud Run would."""
