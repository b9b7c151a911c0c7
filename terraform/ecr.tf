# The job image's repository. Braket hybrid jobs need a private ECR image in the job's region,
# referenced by tag or digest; SageMaker takes the same image.

resource "aws_ecr_repository" "jobs" {
  #checkov:skip=CKV_AWS_136:AES256 (ECR-managed keys) by default so that no KMS key is required; set kms_key_arn to encrypt the repository with it.
  name                 = local.repository_name
  image_tag_mutability = var.image_tag_mutability
  force_delete         = var.force_destroy

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = local.use_kms ? "KMS" : "AES256"
    kms_key         = local.use_kms ? var.kms_key_arn : null
  }
}

resource "aws_ecr_lifecycle_policy" "jobs" {
  repository = aws_ecr_repository.jobs.name

  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Keep the ${var.ecr_images_kept} most recent images"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = var.ecr_images_kept
        }
        action = {
          type = "expire"
        }
      },
    ]
  })
}

# Optional: build the image from container/ and push it during apply. The script logs in to ECR
# with the caller's credentials; see its --help for what it needs on the machine.
resource "terraform_data" "image" {
  count = var.build_image ? 1 : 0

  triggers_replace = [aws_ecr_repository.jobs.repository_url, var.image_tag]

  provisioner "local-exec" {
    working_dir = "${path.module}/.."
    command     = "container/build_and_push.sh --repository-uri '${aws_ecr_repository.jobs.repository_url}' --region '${var.region}' --tag '${var.image_tag}'"
    # The script reads the versions the image must match from this Python's byoc_executor.
    environment = { PYTHON = var.client_python }
  }
}

resource "terraform_data" "image_gpu" {
  count = var.build_gpu_image ? 1 : 0

  triggers_replace = [aws_ecr_repository.jobs.repository_url, var.image_tag]

  provisioner "local-exec" {
    working_dir = "${path.module}/.."
    command     = "container/build_and_push.sh --repository-uri '${aws_ecr_repository.jobs.repository_url}' --region '${var.region}' --gpu --tag '${var.image_tag}-gpu'"
    # The script reads the versions the image must match from this Python's byoc_executor.
    environment = { PYTHON = var.client_python }
  }
}
