# The artifact bucket: payloads, source archives and results of every task, and the results of
# quantum tasks run inside Braket jobs. Nothing in it outlives artifact_retention_days.

resource "aws_s3_bucket" "artifacts" {
  #checkov:skip=CKV_AWS_18:Access logging needs a second bucket and costs per request; artifacts are short-lived and every write is signed or authenticated by the executor. Use CloudTrail S3 data events for an audit trail.
  #checkov:skip=CKV_AWS_144:Cross-region replication would copy transient task artifacts that expire within days; nothing here needs a second region.
  #checkov:skip=CKV_AWS_21:Versioning would keep every payload the executor deletes; objects are written once per task and payloads are verified against digests in the job request, so old versions serve no purpose.
  #checkov:skip=CKV2_AWS_62:No consumer for event notifications: the executor polls the job APIs.
  #checkov:skip=CKV_AWS_145:SSE-S3 by default so that no KMS key (and no monthly key fee) is required; set kms_key_arn to switch the bucket to SSE-KMS.
  bucket        = local.bucket_name
  force_destroy = var.force_destroy
}

resource "aws_s3_bucket_ownership_controls" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  rule {
    # ACLs disabled: the bucket owner owns every object, whoever wrote it.
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = local.use_kms ? "aws:kms" : "AES256"
      kms_master_key_id = local.use_kms ? var.kms_key_arn : null
    }
    # S3 Bucket Keys cut KMS request costs; ignored with SSE-S3.
    bucket_key_enabled = local.use_kms
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  rule {
    id     = "expire-job-artifacts"
    status = "Enabled"

    # The whole bucket: it holds nothing but job artifacts.
    filter {}

    expiration {
      days = var.artifact_retention_days
    }

    # Large payloads go up as multipart uploads; drop the parts of any that never completed.
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "artifacts_bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.artifacts.arn,
      "${aws_s3_bucket.artifacts.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  policy = data.aws_iam_policy_document.artifacts_bucket.json

  # S3 refuses a policy while the public access block is being written.
  depends_on = [aws_s3_bucket_public_access_block.artifacts]
}
