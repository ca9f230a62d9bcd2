"""The release pipeline's logic (issue #20, docs/releasing.md): which deployables a tag changes
(``plan``, from ``deployables`` and the ``imports`` graph, read through ``git``), the Avro
``schema_gate``, the ``steps`` (gcloud and terraform commands) that release a plan into an
environment, and the ``canary`` decision. The ``meridian release`` commands are
meridian/runtime/release_cli.py; the canary's Cloud Monitoring adapter, meridian/gcp/monitoring.py.
"""
