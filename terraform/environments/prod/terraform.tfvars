# Identifiers only; nothing here is secret (secrets live in Secret Manager, see README).
project_id                = "meridian-prod"
prefix                    = "mrd-prod"
region                    = "us-central1"
image_tag                 = "v0.1.0"
geofence_template_version = "v0.1.0"
alert_emails              = ["oncall@meridian.example"]
dead_letter_operator      = "group:meridian-oncall@meridian.example"
edge_domain               = "meridian.example"
# The providers' endpoints (their API keys are secrets, added with gcloud: README).
billing_url = "https://billing.provider.example/v1"
sms_url     = "https://sms.provider.example/v1"
