terraform {
  # 1.5: `check` blocks and `terraform_data`; validation may only reference its own variable.
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}
