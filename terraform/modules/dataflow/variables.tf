variable "job" {
  description = "Job settings; enabled=false creates identity and bucket only (before the template is built)."
  type = object({
    enabled             = optional(bool, true)
    machine_type        = optional(string, "n2-standard-2")
    max_workers         = optional(number, 5)
    sdk_container_image = optional(string)
    template_version    = string
  })
}

variable "labels" {
  description = "Labels on the job and bucket."
  type        = map(string)
  default     = {}
}

variable "name" {
  description = "Pipeline name (the catalog service name)."
  type        = string
  default     = "geofence-pipeline"
}

variable "parameters" {
  description = "Pipeline options passed to pipelines/geofence, as flex_template/metadata.json declares them (subscription, output_topic, dead_letter_topic, backend)."
  type        = map(string)
}

variable "prefix" {
  description = "Prefix of the job, bucket and service account; null for none."
  type        = string
  default     = null
}

variable "project_id" {
  description = "Project of the job."
  type        = string
}

variable "region" {
  description = "Dataflow region."
  type        = string
}

variable "service_account" {
  description = "The pipeline's own identity (email and IAM member)."
  type = object({
    email  = string
    member = string
  })
}

variable "subnetwork" {
  description = "Self link of the subnetwork the workers run in."
  type        = string
}
