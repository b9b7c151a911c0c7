# The services write every job's output to these fixed, account-wide groups (one per region).
# Managing them here sets their retention; with manage_log_groups = false they are left alone.

resource "aws_cloudwatch_log_group" "braket_jobs" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts log data at rest by default; a customer managed key would need a key policy for the logs service principal, which this module cannot add to a key it does not own.
  #checkov:skip=CKV_AWS_338:Retention is the user's choice (log_retention_days, default 30 days): job logs are debugging output and storage is billed per GB-month. CloudTrail keeps the audit trail.
  count = var.enable_braket && var.manage_log_groups ? 1 : 0

  name              = local.braket_log_group
  retention_in_days = var.log_retention_days
}

resource "aws_cloudwatch_log_group" "sagemaker_jobs" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts log data at rest by default; a customer managed key would need a key policy for the logs service principal, which this module cannot add to a key it does not own.
  #checkov:skip=CKV_AWS_338:Retention is the user's choice (log_retention_days, default 30 days): job logs are debugging output and storage is billed per GB-month. CloudTrail keeps the audit trail.
  count = var.enable_sagemaker && var.manage_log_groups ? 1 : 0

  name              = local.sagemaker_log_group
  retention_in_days = var.log_retention_days
}
