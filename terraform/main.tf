# Everything byoc-executor needs in one account and region: a bucket for task artifacts, an ECR
# repository for the job image, one execution role per job service, the services' log groups, and
# a policy for the identity that runs the Covalent server. The executor itself never creates AWS
# resources (byoc_executor/settings.py).

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ "byoc-executor" = var.name_prefix }, var.tags)
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition
  use_kms   = var.kms_key_arn != ""

  # Braket's service-linked role (AmazonBraketServiceRolePolicy) reads and writes only buckets
  # whose names start with "amazon-braket-"; quantum tasks created inside a job store their
  # results in the job's output bucket, so the bucket follows that convention.
  bucket_name = "amazon-braket-${var.name_prefix}-${local.account}-${var.region}"
  bucket_arn  = "arn:${local.partition}:s3:::${local.bucket_name}"

  # Object ARNs under the executor's prefix: <prefix>/<dispatch_id>/node-<n>/{payload,source,output}/
  # (byoc_executor/services/__init__.py: StagedTask).
  prefix_objects  = "${local.bucket_arn}/${var.s3_prefix}/*"
  payload_objects = "${local.bucket_arn}/${var.s3_prefix}/*/payload/*"
  source_objects  = "${local.bucket_arn}/${var.s3_prefix}/*/source/*"
  output_objects  = "${local.bucket_arn}/${var.s3_prefix}/*/output/*"

  # Every job the executor creates is named cov-... (byoc_executor/services/__init__.py:
  # job_name; tests/test_terraform.py checks the two agree). SageMaker training-job ARNs carry
  # the name; Braket job ARNs now end in a UUID, so Braket jobs cannot be scoped by name.
  job_name_prefix = "cov-"

  # The Braket SDK inside a hybrid job stores quantum-task results under
  # s3://<output bucket>/jobs/<job name>/tasks/ (AMZN_BRAKET_TASK_RESULTS_S3_URI).
  quantum_task_objects = "${local.bucket_arn}/jobs/${local.job_name_prefix}*/tasks/*"

  braket_log_group    = "/aws/braket/jobs"
  sagemaker_log_group = "/aws/sagemaker/TrainingJobs"
  braket_log_arn      = "arn:${local.partition}:logs:${var.region}:${local.account}:log-group:${local.braket_log_group}"
  sagemaker_log_arn   = "arn:${local.partition}:logs:${var.region}:${local.account}:log-group:${local.sagemaker_log_group}"

  repository_name = "${var.name_prefix}-byoc-executor"
  image_uri       = "${aws_ecr_repository.jobs.repository_url}:${var.image_tag}"
  image_uri_gpu   = "${aws_ecr_repository.jobs.repository_url}:${var.image_tag}-gpu"

  braket_role_arn    = var.enable_braket ? aws_iam_role.braket_jobs[0].arn : ""
  sagemaker_role_arn = var.enable_sagemaker ? aws_iam_role.sagemaker_jobs[0].arn : ""

  # The template's variables: tests/test_terraform.py renders covalent_config.tftpl with exactly
  # these names and checks that BYOCExecutor accepts the result.
  covalent_config_vars = {
    service        = var.default_service
    image_uri      = local.image_uri
    s3_bucket_name = aws_s3_bucket.artifacts.id
    s3_prefix      = var.s3_prefix
    role_arn       = var.default_service == "braket" ? local.braket_role_arn : local.sagemaker_role_arn
    region         = var.region
  }
}
