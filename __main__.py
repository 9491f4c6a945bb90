"""s3-fargate-jobs: run a Fargate task for every file uploaded to S3.

The program is the component's first user: read the stack's settings, create the system, export.
"""

import pulumi

from infra import S3FargateJobs
from infra.args import load_args

jobs = S3FargateJobs(f"{pulumi.get_project()}-{pulumi.get_stack()}", load_args())

pulumi.export("bucketName", jobs.bucket_name)
pulumi.export("uploadPrefix", jobs.upload_prefix)
pulumi.export("resultPrefix", jobs.result_prefix)
pulumi.export("clusterArn", jobs.cluster_arn)
pulumi.export("taskDefinitionArn", jobs.task_definition_arn)
pulumi.export("taskRunnerFunctionName", jobs.task_runner_function_name)
pulumi.export("logGroupName", jobs.log_group_name)
pulumi.export("deadLetterQueueUrl", jobs.dead_letter_queue_url)
pulumi.export("backlogQueueUrl", jobs.backlog_queue_url)
pulumi.export("maxConcurrentTasks", jobs.max_concurrent_tasks)
pulumi.export("repositoryUrl", jobs.repository_url)
pulumi.export("failedJobsQueueUrl", jobs.failed_jobs_queue_url)
pulumi.export("alertTopicArn", jobs.alert_topic_arn)
pulumi.export("jobTableName", jobs.job_table_name)
pulumi.export("dashboardUrl", jobs.dashboard_url)
