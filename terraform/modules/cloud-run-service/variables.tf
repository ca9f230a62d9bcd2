variable "args" {
  description = "Arguments of the entrypoint: [\"serve\", <catalog service>] (one image serves every Meridian service)."
  type        = list(string)
  default     = []
}

variable "command" {
  description = "Container entrypoint: [\"meridian\"] (the image's `meridian serve SERVICE`)."
  type        = list(string)
}

variable "deletion_protection" {
  description = "Refuse to destroy the service from Terraform."
  type        = bool
  default     = false
}

variable "env" {
  description = "Plain environment variables (never secrets: use var.secrets)."
  type        = map(string)
  default     = {}
}

variable "image" {
  description = "Container image in Artifact Registry, pinned by tag or digest."
  type        = string
}

variable "ingress" {
  description = "Cloud Run ingress setting."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  validation {
    condition = contains([
      "INGRESS_TRAFFIC_ALL",
      "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER",
      "INGRESS_TRAFFIC_INTERNAL_ONLY",
    ], var.ingress)
    error_message = "ingress must be a Cloud Run v2 ingress value."
  }
}

variable "invoker_iam_disabled" {
  description = "Skip Cloud Run's invoker IAM check: only for a service behind the load balancer (ingress INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER) that authenticates its callers itself."
  type        = bool
  default     = false
}

variable "invokers" {
  description = "Label => IAM member granted roles/run.invoker on this service; no one else is."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for m in values(var.invokers) : !contains(["allUsers", "allAuthenticatedUsers"], m)])
    error_message = "Meridian services are never invokable anonymously; front them with the API gateway."
  }
}

variable "labels" {
  description = "Labels on the service and its revisions (cost attribution per service)."
  type        = map(string)
  default     = {}
}

variable "managed_prometheus" {
  description = "Run Google Cloud Managed Service for Prometheus' collector as a sidecar, scraping the app's :8080/metrics into Cloud Monitoring (and grant roles/monitoring.metricWriter)."
  type        = bool
  default     = true
}

variable "managed_prometheus_image" {
  description = "The Managed Service for Prometheus sidecar image, pinned by its version tag."
  type        = string
  default     = "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.2.0"
  validation {
    condition     = can(regex(":[0-9]+\\.[0-9]+\\.[0-9]+$", var.managed_prometheus_image)) || can(regex("@sha256:[0-9a-f]{64}$", var.managed_prometheus_image))
    error_message = "Pin the sidecar image by a version tag (x.y.z) or a digest, never latest."
  }
}

variable "name" {
  description = "Service name as in the catalog (e.g. billing)."
  type        = string
}

variable "prefix" {
  description = "Prefix of the service and service-account names; null for none."
  type        = string
  default     = null
}

variable "project_id" {
  description = "Project of the service."
  type        = string
}

variable "project_roles" {
  description = "Project roles of the service's own account (keep to the least it needs)."
  type        = list(string)
  default     = []
}

variable "region" {
  description = "Cloud Run region."
  type        = string
}

variable "resources" {
  description = "Container limits."
  type = object({
    cpu      = optional(string, "1")
    cpu_idle = optional(bool, true)
    memory   = optional(string, "512Mi")
  })
  default = {}
}

variable "scaling" {
  description = "Instance bounds; min_instances > 0 keeps latency-critical services warm."
  type = object({
    max_instances = optional(number, 20)
    min_instances = optional(number, 0)
  })
  default = {}
}

variable "secrets" {
  description = "Environment variable => Secret Manager secret id (and version) it is read from."
  type = map(object({
    secret  = string
    version = optional(string, "latest")
  }))
  default = {}
}

variable "vpc_access" {
  description = "Serverless VPC Access connector and egress mode; null for no VPC egress."
  type = object({
    connector = string
    egress    = optional(string, "PRIVATE_RANGES_ONLY")
  })
  default = null
}
