output "ids" {
  description = "Workflow id and name."
  value = {
    name     = google_workflows_workflow.default.name
    workflow = google_workflows_workflow.default.id
  }
}
