# The migration bridge's push direction (#21; services/sync/writer): the legacy-writer reactor is
# a Cloud Run service like every reactor (services.tf, from the catalog), with its push
# subscription and dead-letter topic from the catalog (the pubsub module). What it needs beyond a
# reactor: the monolith's Cloud SQL instance, reached by private IP through the VPC connector every
# reactor already has (egress PRIVATE_RANGES_ONLY), as var.legacy's user, whose password it reads
# from Secret Manager by name at start (MERIDIAN_LEGACY_PASSWORD_SECRET, services.tf). The secret
# is the sync jobs' (sync.tf); Terraform creates it, never its value. No Firestore role: the
# writer keeps its processed-events ledger in PostgreSQL, with its effect.

resource "google_secret_manager_secret_iam_member" "legacy_writer_password" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.legacy_password.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = module.reactor["legacy-writer"].service_account.member
}
