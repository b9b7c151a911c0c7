output "bucket_name" {
  description = "The artifact bucket (the executor's s3_bucket_name)."
  value       = aws_s3_bucket.artifacts.id
}

output "repository_url" {
  description = "The job image's ECR repository, without a tag (container/build_and_push.sh --repository-uri)."
  value       = aws_ecr_repository.jobs.repository_url
}

output "image_uri" {
  description = "The job image (the executor's image_uri): <repository>:<image_tag>."
  value       = local.image_uri
}

output "image_uri_gpu" {
  description = "The GPU variant of the job image: <repository>:<image_tag>-gpu."
  value       = local.image_uri_gpu
}

output "braket_role_arn" {
  description = "Execution role for Braket hybrid jobs (the executor's role_arn with service = \"braket\"); null when enable_braket is false."
  value       = var.enable_braket ? aws_iam_role.braket_jobs[0].arn : null
}

output "sagemaker_role_arn" {
  description = "Execution role for SageMaker training jobs (the executor's role_arn with service = \"sagemaker\"); null when enable_sagemaker is false."
  value       = var.enable_sagemaker ? aws_iam_role.sagemaker_jobs[0].arn : null
}

output "covalent_server_policy_arn" {
  description = "The policy to attach to the user or role that runs the Covalent server."
  value       = aws_iam_policy.covalent_server.arn
}

output "covalent_server_policy_json" {
  description = "The same policy as a JSON document, to merge into a policy you manage yourself."
  value       = data.aws_iam_policy_document.covalent_server.json
}

output "covalent_config" {
  description = "The [executors.byoc] section of covalent.conf for default_service (terraform output -raw covalent_config)."
  value       = templatefile("${path.module}/covalent_config.tftpl", local.covalent_config_vars)
}
