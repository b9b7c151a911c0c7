terraform {
  # terraform_data (the optional image build) needs 1.4; 1.5 is the oldest release this is written for.
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}
