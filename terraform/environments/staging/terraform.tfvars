# Identifiers only; nothing here is secret (secrets live in Secret Manager, see README).
project_id                = "meridian-staging"
prefix                    = "mrd-stg"
region                    = "us-central1"
image_tag                 = "latest"
geofence_template_version = "latest"
alert_emails              = []
edge_domain               = "staging.meridian.example"
# The providers' endpoints (their API keys are secrets, added with gcloud: README).
billing_url = "https://billing.provider.example/v1"
sms_url     = "https://sms.provider.example/v1"
