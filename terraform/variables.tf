variable "name_prefix" {
  description = "Prefix of every resource name (bucket, ECR repository, roles, policy): 2 to 16 lowercase letters, digits or hyphens, starting with a letter."
  type        = string

  validation {
    # 16 characters keep the bucket name (amazon-braket-<prefix>-<account>-<region>) within S3's 63.
    condition     = can(regex("^[a-z][a-z0-9-]{0,14}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 2 to 16 characters: lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "region" {
  description = "AWS region of the bucket, the repository and the jobs. Braket hybrid jobs on a QPU must run in that QPU's region."
  type        = string
  default     = "us-east-1"

  validation {
    # The same shape byoc_executor.settings accepts for `region`.
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "enable_braket" {
  description = "Create the execution role for Braket hybrid jobs and grant the Covalent server the Braket job API."
  type        = bool
  default     = true
}

variable "enable_sagemaker" {
  description = "Create the execution role for SageMaker training jobs and grant the Covalent server the SageMaker training API."
  type        = bool
  default     = true
}

variable "default_service" {
  description = "The service the covalent_config output selects for [executors.byoc]: \"braket\" or \"sagemaker\" (it must be enabled)."
  type        = string
  default     = "braket"

  validation {
    condition     = contains(["braket", "sagemaker"], var.default_service)
    error_message = "default_service must be \"braket\" or \"sagemaker\"."
  }
}

variable "s3_prefix" {
  description = "Key prefix of the executor's artifacts (the executor's s3_prefix setting). The roles and the server policy reach only keys under it."
  type        = string
  default     = "byoc-executor"

  validation {
    condition     = can(regex("^[a-zA-Z0-9._-]+(/[a-zA-Z0-9._-]+)*$", var.s3_prefix))
    error_message = "s3_prefix must be path segments of letters, digits, '.', '_' or '-' joined by single slashes, with no leading or trailing slash."
  }
}

variable "artifact_retention_days" {
  description = "Days after which S3 expires job artifacts (payloads, sources, results, quantum-task results). The executor deletes a task's artifacts itself once its result is verified; this catches the rest (failures, keep_artifacts=true)."
  type        = number
  default     = 14

  validation {
    condition     = var.artifact_retention_days >= 1 && var.artifact_retention_days <= 3650 && floor(var.artifact_retention_days) == var.artifact_retention_days
    error_message = "artifact_retention_days must be a whole number from 1 to 3650."
  }
}

variable "kms_key_arn" {
  description = "ARN of an existing customer managed KMS key for the bucket (SSE-KMS) and the ECR repository. Empty: SSE-S3 and AES256, no key and no key fee. This module never creates a key."
  type        = string
  default     = ""

  validation {
    condition     = var.kms_key_arn == "" || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[a-zA-Z0-9-]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be empty or a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>); aliases are not accepted."
  }
}

variable "image_tag" {
  description = "Tag of the job image in the repository (the GPU variant is tagged <image_tag>-gpu). With immutable tags (image_tag_mutability), publish a new image under a new tag."
  type        = string
  default     = "0.1.0"

  validation {
    # ECR's tag pattern, leaving room for the "-gpu" suffix.
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,123}$", var.image_tag))
    error_message = "image_tag must be 1 to 124 characters of letters, digits, '_', '.' or '-', not starting with '.' or '-'."
  }
}

variable "image_tag_mutability" {
  description = "IMMUTABLE (default): a pushed tag can never point at another image, so a configured image_uri cannot be swapped under running work. container/build_and_push.sh also pushes a tag derived from the package, Python, covalent and cloudpickle versions, so rebuilding the same versions under a new image_tag needs MUTABLE."
  type        = string
  default     = "IMMUTABLE"

  validation {
    condition     = contains(["IMMUTABLE", "MUTABLE"], var.image_tag_mutability)
    error_message = "image_tag_mutability must be \"IMMUTABLE\" or \"MUTABLE\"."
  }
}

variable "ecr_images_kept" {
  description = "How many images the repository keeps; ECR expires the oldest beyond that. Keep it above the number of tags in use."
  type        = number
  default     = 10

  validation {
    condition     = var.ecr_images_kept >= 1 && var.ecr_images_kept <= 1000 && floor(var.ecr_images_kept) == var.ecr_images_kept
    error_message = "ecr_images_kept must be a whole number from 1 to 1000."
  }
}

variable "log_retention_days" {
  description = "Retention of the jobs' CloudWatch log groups, in days (a value CloudWatch Logs accepts)."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653."
  }
}

variable "manage_log_groups" {
  description = "Create the account-wide log groups /aws/braket/jobs and /aws/sagemaker/TrainingJobs with log_retention_days. Set false if they already exist (or `terraform import` them); destroying them deletes every job's logs in them."
  type        = bool
  default     = true
}

variable "build_image" {
  description = "Build the job image and push it as <repository>:<image_tag> with container/build_and_push.sh during apply (needs docker, podman or buildah on the machine running terraform)."
  type        = bool
  default     = false
}

variable "client_python" {
  description = "With build_image: the Python of the client that will submit tasks (e.g. the absolute path of .venv/bin/python). build_and_push.sh reads the Python, covalent and cloudpickle versions the image must match from its byoc_executor, and fails if it cannot import it."
  type        = string
  default     = "python3"
}

variable "build_gpu_image" {
  description = "Also build and push the GPU variant as <repository>:<image_tag>-gpu (build_and_push.sh --gpu)."
  type        = bool
  default     = false
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete the bucket and the repository with their contents. Default false: destroy fails on a non-empty bucket or repository."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource this module creates."
  type        = map(string)
  default     = {}
}
