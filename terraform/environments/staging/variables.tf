variable "alert_emails" {
  description = "Who receives the platform's alerts."
  type        = list(string)
  default     = []
}

variable "billing_url" {
  description = "The client billing API's base URL (its key: the billing-api-key secret)."
  type        = string
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

variable "edge_domain" {
  description = "Public host name of the command API and the live map (the load balancer's certificate; tracking links)."
  type        = string
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

variable "sms_url" {
  description = "The SMS provider's base URL (its key: the sms-api-key secret)."
  type        = string
}

variable "vpc_sc" {
  description = "VPC Service Controls perimeter (needs an organisation's access policy); null for none."
  type = object({
    access_levels      = optional(list(string), [])
    access_policy      = string
    dry_run            = optional(bool, true)
    ingress_identities = optional(list(string), [])
  })
  default = null
}
