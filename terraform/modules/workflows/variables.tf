variable "call_log_level" {
  description = "Workflows call logging."
  type        = string
  default     = "LOG_ERRORS_ONLY"
}

variable "description" {
  description = "What the workflow does."
  type        = string
  default     = "Meridian dispatch saga: reserve, optimise, assign, wait for acceptance, confirm; compensates on failure."
}

variable "env" {
  description = "User environment variables of the workflow (step service URLs)."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels on the workflow."
  type        = map(string)
  default     = {}
}

variable "name" {
  description = "Workflow name (without prefix)."
  type        = string
  default     = "dispatch"
}

variable "prefix" {
  description = "Prefix of the workflow and its service account; null for none."
  type        = string
  default     = null
}

variable "project_id" {
  description = "Project of the workflow."
  type        = string
}

variable "region" {
  description = "Workflows region."
  type        = string
}

variable "service_account_email" {
  description = "Identity the workflow runs as."
  type        = string
}

variable "source_path" {
  description = "Path of the workflow definition: a file of the repository's workflows/."
  type        = string
}
