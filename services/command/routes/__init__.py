"""The command service's HTTP routes, one module per feature (``parcels``, ``telemetry``,
``dispatch``, ``schedules``, ``pod``, ``webhooks``), and what they share (``common``). FastAPI
lives here and in ``app.py`` only."""
