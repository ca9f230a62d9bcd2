# Identifiers only; nothing here is secret (secrets live in Secret Manager, see README).
project_id                = "meridian-dev"
prefix                    = "mrd-dev"
region                    = "us-central1"
image_tag                 = "latest"
geofence_template_version = "latest"
alert_emails              = []
