variable "alert_emails" {
  description = "Who receives the platform's alerts."
  type        = list(string)
  default     = []
}

variable "dead_letter_operator" {
  description = "IAM member allowed to pull and replay dead letters (e.g. group:oncall@example.com)."
  type        = string
  default     = null
}

variable "deployer" {
  description = "IAM member of the CI identity (Workload Identity Federation principal); null to skip."
  type        = string
  default     = null
}

variable "geofence_enabled" {
  description = "Launch the geofence Dataflow job; false until its Flex Template spec is built (README)."
  type        = bool
  default     = true
}

variable "geofence_template_version" {
  description = "Version of the geofence Flex Template spec built into the pipeline bucket."
  type        = string
}

variable "image_tag" {
  description = "Tag or digest of the meridian image to deploy."
  type        = string
}

variable "prefix" {
  description = "Prefix of every resource name."
  type        = string
}

variable "project_id" {
  description = "Project of this environment."
  type        = string
}

variable "region" {
  description = "Region of Cloud Run, Workflows, Dataflow and the network."
  type        = string
}
