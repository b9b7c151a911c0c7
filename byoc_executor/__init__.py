"""byoc-executor: run Covalent electrons as Amazon Braket hybrid jobs or SageMaker training jobs."""
