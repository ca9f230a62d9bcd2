"""The geofence and idle-detection job: Apache Beam over the telemetry firehose.

``python -m pipelines.geofence`` runs it (DirectRunner locally, Dataflow in production); see
README.md beside this file. The per-vehicle logic lives in ``tracking.py`` and imports no Beam.
"""
