output "ids" {
  description = "Job id (null until the job is enabled) and staging bucket."
  value = {
    bucket = google_storage_bucket.pipeline.name
    job    = try(google_dataflow_flex_template_job.default[0].job_id, null)
  }
}

output "template_path" {
  description = "Where `gcloud dataflow flex-template build` must write the template spec."
  value       = { spec = "gs://${google_storage_bucket.pipeline.name}/templates/${var.name}-${var.job.template_version}.json" }
}
