# Execution roles: what a running job may do. Each is trusted only by its own service, only for
# jobs of this account (and, where the service sets it, of this region), and allowed only what
# container/byoc_entry.py and the service need: read the task's payload (and, for Braket, its
# source archive), write the task's results, pull this repository's image, write the service's
# job logs, and, for Braket, run quantum tasks on devices.

# ---- trust policies ----------------------------------------------------------------------------

data "aws_iam_policy_document" "braket_trust" {
  statement {
    sid     = "BraketHybridJobs"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["braket.amazonaws.com"]
    }

    # Confused-deputy guard: only Braket acting for this account may assume the role.
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }

    # ...and only for a hybrid job of this account and region. Braket's documentation does not
    # promise that it sets aws:SourceArn when it assumes a job's role, so the key is checked when
    # present and a missing key does not lock every job out.
    condition {
      test     = "ArnLikeIfExists"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:braket:${var.region}:${local.account}:job/*"]
    }
  }
}

data "aws_iam_policy_document" "sagemaker_trust" {
  statement {
    sid     = "SageMakerTrainingJobs"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["sagemaker.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }

    # SageMaker sets aws:SourceArn to the training job's ARN (SageMaker developer guide,
    # "Cross-service confused deputy prevention", training jobs).
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:sagemaker:${var.region}:${local.account}:training-job/*"]
    }
  }
}

# ---- what both kinds of job need -----------------------------------------------------------------

data "aws_iam_policy_document" "job_common" {
  statement {
    sid       = "ReadTaskInputs"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = [local.payload_objects, local.source_objects]
  }

  statement {
    sid       = "WriteTaskResults"
    effect    = "Allow"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = [local.output_objects]
  }

  # The service lists the payload channel's prefix to copy it in. IfExists: a request without a
  # prefix (HeadBucket) is allowed; a listing of another prefix is not.
  statement {
    sid       = "ListTaskPrefix"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]

    condition {
      test     = "StringLikeIfExists"
      variable = "s3:prefix"
      values   = ["${var.s3_prefix}/*"]
    }
  }

  statement {
    sid     = "PullJobImage"
    effect  = "Allow"
    actions = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = [
      aws_ecr_repository.jobs.arn,
    ]
  }

  # ecr:GetAuthorizationToken supports no resource-level permissions: IAM accepts only "*" for
  # it. The token it returns grants nothing by itself; what can be pulled is decided by the
  # repository-scoped statement above.
  statement {
    sid       = "EcrLogin"
    effect    = "Allow"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
}

data "aws_iam_policy_document" "job_kms" {
  count = local.use_kms ? 1 : 0

  # The bucket encrypts with the key: reading inputs needs Decrypt, writing results
  # GenerateDataKey. Only through S3 in this region.
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

# ---- Braket hybrid jobs --------------------------------------------------------------------------

data "aws_iam_policy_document" "braket_job" {
  count = var.enable_braket ? 1 : 0

  statement {
    sid     = "WriteJobLogs"
    effect  = "Allow"
    actions = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [
      "${local.braket_log_arn}:log-stream:${local.job_name_prefix}*",
    ]
  }

  # The service creates the group if it is missing (manage_log_groups = false) and finds its
  # streams; both only on this one group.
  statement {
    sid     = "JobLogGroup"
    effect  = "Allow"
    actions = ["logs:CreateLogGroup", "logs:DescribeLogStreams"]
    resources = [
      local.braket_log_arn,
      "${local.braket_log_arn}:*",
    ]
  }

  # Quantum tasks on any device. CreateQuantumTask, SearchQuantumTasks, GetDevice and
  # SearchDevices support no resource-level permissions (devices are AWS-owned, tasks get their
  # ARN on creation), so they take "*".
  statement {
    sid       = "RunQuantumTasks"
    effect    = "Allow"
    actions   = ["braket:CreateQuantumTask", "braket:SearchQuantumTasks", "braket:GetDevice", "braket:SearchDevices"]
    resources = ["*"]
  }

  # Tasks of this account, in any region: a QPU may live in another region than the job.
  statement {
    sid       = "FollowQuantumTasks"
    effect    = "Allow"
    actions   = ["braket:GetQuantumTask", "braket:CancelQuantumTask"]
    resources = ["arn:${local.partition}:braket:*:${local.account}:quantum-task/*"]
  }

  statement {
    sid       = "QuantumTaskResults"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = [local.quantum_task_objects]
  }

  statement {
    sid       = "ListQuantumTaskResults"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["jobs/${local.job_name_prefix}*"]
    }
  }
}

resource "aws_iam_role" "braket_jobs" {
  count = var.enable_braket ? 1 : 0

  name               = "${var.name_prefix}-braket-jobs"
  description        = "Execution role of byoc-executor's Braket hybrid jobs"
  assume_role_policy = data.aws_iam_policy_document.braket_trust.json
}

data "aws_iam_policy_document" "braket_jobs" {
  count = var.enable_braket ? 1 : 0

  source_policy_documents = concat(
    [data.aws_iam_policy_document.job_common.json, data.aws_iam_policy_document.braket_job[0].json],
    data.aws_iam_policy_document.job_kms[*].json,
  )
}

resource "aws_iam_role_policy" "braket_jobs" {
  count = var.enable_braket ? 1 : 0

  name   = "byoc-braket-job"
  role   = aws_iam_role.braket_jobs[0].id
  policy = data.aws_iam_policy_document.braket_jobs[0].json
}

# ---- SageMaker training jobs ---------------------------------------------------------------------

data "aws_iam_policy_document" "sagemaker_job" {
  count = var.enable_sagemaker ? 1 : 0

  statement {
    sid     = "WriteJobLogs"
    effect  = "Allow"
    actions = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [
      "${local.sagemaker_log_arn}:log-stream:${local.job_name_prefix}*",
    ]
  }

  statement {
    sid     = "JobLogGroup"
    effect  = "Allow"
    actions = ["logs:CreateLogGroup", "logs:DescribeLogStreams"]
    resources = [
      local.sagemaker_log_arn,
      "${local.sagemaker_log_arn}:*",
    ]
  }
}

resource "aws_iam_role" "sagemaker_jobs" {
  count = var.enable_sagemaker ? 1 : 0

  name               = "${var.name_prefix}-sagemaker-jobs"
  description        = "Execution role of byoc-executor's SageMaker training jobs"
  assume_role_policy = data.aws_iam_policy_document.sagemaker_trust.json
}

data "aws_iam_policy_document" "sagemaker_jobs" {
  count = var.enable_sagemaker ? 1 : 0

  source_policy_documents = concat(
    [data.aws_iam_policy_document.job_common.json, data.aws_iam_policy_document.sagemaker_job[0].json],
    data.aws_iam_policy_document.job_kms[*].json,
  )
}

resource "aws_iam_role_policy" "sagemaker_jobs" {
  count = var.enable_sagemaker ? 1 : 0

  name   = "byoc-sagemaker-job"
  role   = aws_iam_role.sagemaker_jobs[0].id
  policy = data.aws_iam_policy_document.sagemaker_jobs[0].json
}
