"""The migration bridge (#21): keeps the legacy monolith's PostgreSQL and Meridian consistent
while the monolith is retired. ``legacy`` opens the connections, ``entities`` maps rows and
documents, ``pull`` finds the monolith's changes, ``apply`` writes them into Meridian, ``jobs``
are the Cloud Run Jobs of the sync workflow. No other service imports this package."""
