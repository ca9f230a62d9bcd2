# One workflow: the dispatch saga (workflows/dispatch.yaml) or the migration bridge's pipeline
# (workflows/sync.yaml). Its definition is the very file the embedded Workflows engine runs
# locally, read here with file() so the two cannot differ. It runs as its own service account,
# created by the caller, which grants it what its steps call (run.invoker on dispatch; the sync
# jobs' executor role).

locals {
  prefix = var.prefix == null || var.prefix == "" ? "" : "${var.prefix}-"
}

resource "google_workflows_workflow" "default" {
  project         = var.project_id
  region          = var.region
  name            = "${local.prefix}${var.name}"
  description     = var.description
  service_account = var.service_account_email
  call_log_level  = var.call_log_level
  labels          = var.labels
  source_contents = file(var.source_path)
  # Step URLs are injected, never hard-coded in the YAML (sys.get_env in the workflow).
  user_env_vars = var.env
}
