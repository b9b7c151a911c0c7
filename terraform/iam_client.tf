# The policy for the identity that runs the Covalent server (where BYOCExecutor.run() executes):
# upload payloads and fetch results under the prefix, create, follow and cancel jobs, pass the
# execution roles to their own service, and read the jobs' logs. Attach the aws_iam_policy to
# that user or role, or copy the covalent_server_policy_json output into your own.

data "aws_iam_policy_document" "server_common" {
  statement {
    sid    = "TaskArtifacts"
    effect = "Allow"
    # PutObjectTagging: every upload carries the task's tags (a PutObject or multipart upload with
    # Tagging is authorized as s3:PutObject AND s3:PutObjectTagging).
    actions   = ["s3:PutObject", "s3:PutObjectTagging", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = [local.prefix_objects]
  }

  # HeadBucket (the executor's first check) is authorized as s3:ListBucket and carries no
  # prefix; the results watch lists a dispatch's prefix and the clean-up a task's. IfExists
  # allows the first and refuses listings of any other prefix.
  statement {
    sid       = "BucketUnderPrefix"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]

    condition {
      test     = "StringLikeIfExists"
      variable = "s3:prefix"
      values   = ["${var.s3_prefix}/*"]
    }
  }
}

data "aws_iam_policy_document" "server_kms" {
  count = local.use_kms ? 1 : 0

  statement {
    sid       = "UseBucketKey"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "server_braket" {
  count = var.enable_braket ? 1 : 0

  # CreateJob and SearchJobs support no resource-level permissions ("*" only); limited to the
  # configured region. What a job can do is bounded by the one role it may be given (below).
  statement {
    sid       = "CreateBraketJobs"
    effect    = "Allow"
    actions   = ["braket:CreateJob", "braket:SearchJobs"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [var.region]
    }
  }

  # Job ARNs end in a UUID the service assigns, so the scope is this account's jobs in the region.
  # TagResource: CreateJob with tags (the executor's `tags` setting) also needs it.
  statement {
    sid       = "FollowBraketJobs"
    effect    = "Allow"
    actions   = ["braket:GetJob", "braket:CancelJob", "braket:TagResource"]
    resources = ["arn:${local.partition}:braket:${var.region}:${local.account}:job/*"]
  }

  statement {
    sid       = "PassBraketJobRole"
    effect    = "Allow"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.braket_jobs[0].arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["braket.amazonaws.com"]
    }
  }

  statement {
    sid     = "ReadBraketJobLogGroup"
    effect  = "Allow"
    actions = ["logs:DescribeLogStreams", "logs:FilterLogEvents"]
    resources = [
      local.braket_log_arn,
      "${local.braket_log_arn}:*",
    ]
  }

  statement {
    sid       = "ReadBraketJobLogStreams"
    effect    = "Allow"
    actions   = ["logs:GetLogEvents"]
    resources = ["${local.braket_log_arn}:log-stream:${local.job_name_prefix}*"]
  }
}

data "aws_iam_policy_document" "server_sagemaker" {
  count = var.enable_sagemaker ? 1 : 0

  # Only jobs named like the executor's (cov-...). AddTags: CreateTrainingJob with Tags needs it.
  # ListTags: `byoc-executor jobs` and a restarted server find the executor's jobs by their tags.
  statement {
    sid       = "TrainingJobs"
    effect    = "Allow"
    actions   = ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob", "sagemaker:AddTags", "sagemaker:ListTags"]
    resources = ["arn:${local.partition}:sagemaker:${var.region}:${local.account}:training-job/${local.job_name_prefix}*"]
  }

  # ListTrainingJobs supports no resource-level permissions ("*" only).
  statement {
    sid       = "ListTrainingJobs"
    effect    = "Allow"
    actions   = ["sagemaker:ListTrainingJobs"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [var.region]
    }
  }

  statement {
    sid       = "PassSageMakerJobRole"
    effect    = "Allow"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.sagemaker_jobs[0].arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["sagemaker.amazonaws.com"]
    }
  }

  statement {
    sid     = "ReadSageMakerJobLogGroup"
    effect  = "Allow"
    actions = ["logs:DescribeLogStreams", "logs:FilterLogEvents"]
    resources = [
      local.sagemaker_log_arn,
      "${local.sagemaker_log_arn}:*",
    ]
  }

  statement {
    sid       = "ReadSageMakerJobLogStreams"
    effect    = "Allow"
    actions   = ["logs:GetLogEvents"]
    resources = ["${local.sagemaker_log_arn}:log-stream:${local.job_name_prefix}*"]
  }
}

data "aws_iam_policy_document" "covalent_server" {
  source_policy_documents = concat(
    [data.aws_iam_policy_document.server_common.json],
    data.aws_iam_policy_document.server_kms[*].json,
    data.aws_iam_policy_document.server_braket[*].json,
    data.aws_iam_policy_document.server_sagemaker[*].json,
  )
}

resource "aws_iam_policy" "covalent_server" {
  name        = "${var.name_prefix}-covalent-server"
  description = "What byoc-executor needs in the Covalent server: its bucket prefix, its jobs, its roles, its job logs"
  policy      = data.aws_iam_policy_document.covalent_server.json

  lifecycle {
    precondition {
      condition     = var.enable_braket || var.enable_sagemaker
      error_message = "Enable at least one service: enable_braket or enable_sagemaker."
    }
    precondition {
      condition     = var.default_service == "braket" ? var.enable_braket : var.enable_sagemaker
      error_message = "default_service names a service that is not enabled: set enable_${var.default_service} = true or choose the other service."
    }
  }
}
